"""The committed contract files match the code, and the topology behaves as documented."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aio_pika
import msgspec

from broker.contract import ASYNCAPI_PATH, DEFINITIONS_PATH, asyncapi, render
from broker.messages import ChatRequest, TokenChunk, reply_decoder, request_decoder
from broker.topology import QueueLimits, Topology


def test_asyncapi_document_is_in_sync_with_the_code() -> None:
    assert ASYNCAPI_PATH.read_text() == render(asyncapi()), "run: python -m broker.contract"


def test_definitions_are_in_sync_with_the_code() -> None:
    assert DEFINITIONS_PATH.read_text() == render(Topology().definitions()), "run: python -m broker.contract"


def test_every_message_schema_has_the_common_fields() -> None:
    schemas = json.loads(ASYNCAPI_PATH.read_text())["components"]["schemas"]
    for name in ("ChatRequest", "TokenChunk", "ChatDone", "ChatError", "Cancel", "SessionEvent"):
        properties = schemas[name]["properties"]
        for field in ("schema_version", "request_id", "user_id", "org_id", "type"):
            assert field in properties, f"{name} lacks {field}"


def test_readers_ignore_unknown_fields() -> None:
    raw = (
        b'{"type":"token","schema_version":1,"request_id":"r","user_id":"u","org_id":"o",'
        b'"generation":"g","seq":0,"content":"x","added_later":{"a":1}}'
    )
    reply = reply_decoder.decode(raw)
    assert isinstance(reply, TokenChunk)
    assert reply.content == "x"


async def test_topology_declares_idempotently_and_matches_definitions(amqp: Any, namespace: str) -> None:
    topology = Topology(namespace, QueueLimits())
    channel = await amqp.channel()
    await topology.declare(channel)
    await topology.declare(channel)  # a second service starting: no PRECONDITION_FAILED
    for queue in topology.definitions()["queues"]:
        declared = await channel.declare_queue(queue["name"], passive=True)
        assert declared.name == queue["name"]


async def test_invalid_request_is_dead_lettered_not_retried(worker: Any, amqp: Any, namespace: str) -> None:
    topology = Topology(namespace, QueueLimits())
    channel = await amqp.channel()
    exchange = await channel.get_exchange(topology.requests_exchange)
    await exchange.publish(
        aio_pika.Message(b'{"type": "chat.request", "garbage": true}', reply_to="nowhere"), routing_key="chat"
    )
    dead = await channel.declare_queue(topology.dead_letter_queue, passive=True)
    message = None
    for _ in range(100):
        message = await dead.get(fail=False, no_ack=True)
        if message is not None:
            break
        await asyncio.sleep(0.05)
    assert message is not None, "the invalid message should reach the dead-letter queue"
    assert b"garbage" in message.body
    assert worker.metrics.registry.get_sample_value("worker_rejected_messages_total") == 1


def test_request_roundtrip() -> None:
    request = ChatRequest(
        request_id="r",
        user_id="u",
        org_id="o",
        session_id="s",
        prompt="שלום",
        model="m",
        deadline=1.0,
        created_at=0.0,
    )
    assert request_decoder.decode(msgspec.json.encode(request)) == request
