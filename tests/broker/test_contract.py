"""The committed contract files match the code, and the topology behaves as documented."""

from __future__ import annotations

import json
from typing import Any

import aio_pika
import aiohttp
import msgspec
from aio_pika.abc import AbstractIncomingMessage
from aio_pika.exceptions import DeliveryError
from helpers import RabbitManagement, broker_user, wait_for
from structlog.testing import capture_logs

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


async def _live_definitions(management: RabbitManagement, prefix: str) -> dict[str, list[dict[str, Any]]]:
    """The broker's exchanges, queues and bindings of this ``prefix``, as its definitions export."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{management.api}/definitions", headers=management.headers) as response,
    ):
        assert response.status == 200, await response.text()
        exported = await response.json()

    def ours(entry: dict[str, Any]) -> bool:
        name = entry.get("source", entry.get("name", ""))
        return bool(entry["vhost"] == management.vhost and name.startswith(f"{prefix}."))

    kinds = ("exchanges", "queues", "bindings")
    return {kind: _sorted([e for e in exported[kind] if ours(e)]) for kind in kinds}


def _sorted(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(entries, key=lambda e: json.dumps(e, sort_keys=True))


async def test_topology_declares_idempotently_and_matches_definitions(
    amqp: Any, namespace: str, rabbitmq_management: RabbitManagement
) -> None:
    topology = Topology(namespace, QueueLimits(max_length=321, delivery_limit=4))
    channel = await amqp.channel()
    await topology.declare(channel)
    await topology.declare(channel)  # a second service starting: no PRECONDITION_FAILED
    expected = topology.definitions(vhost=rabbitmq_management.vhost)
    live = await _live_definitions(rabbitmq_management, namespace)
    # Whole objects: types, durability, every argument (limits, dead-lettering) and every binding.
    for kind in ("exchanges", "queues", "bindings"):
        assert live[kind] == _sorted(expected[kind]), kind


async def test_changed_queue_limits_keep_the_live_queue_instead_of_failing(amqp: Any, namespace: str) -> None:
    channel = await amqp.channel()
    await Topology(namespace, QueueLimits(max_length=3)).declare(channel)
    with capture_logs() as logs:
        # A redeploy with a new REQUEST_QUEUE_MAX_LENGTH: services still start.
        declared = await Topology(namespace, QueueLimits(max_length=50, delivery_limit=2)).declare(channel)
    differ = [e for e in logs if e["event"] == "queue_arguments_differ"]
    assert [e["queue"] for e in differ] == [
        f"{namespace}.requests",
        f"{namespace}.archiver",
        f"{namespace}.ledger",
    ]
    assert all(e["log_level"] == "error" for e in differ)

    # The queue in use is the live one, with its original limit (quorum queues overshoot by one).
    outcomes = []
    for i in range(10):
        try:
            await declared.requests.publish(aio_pika.Message(b"{}", message_id=str(i)), routing_key="chat")
        except DeliveryError:
            outcomes.append("refused")
        else:
            outcomes.append("accepted")
    assert 3 <= outcomes.count("accepted") <= 4
    assert outcomes[-1] == "refused"


async def test_invalid_request_is_dead_lettered_not_retried(worker: Any, amqp: Any, namespace: str) -> None:
    topology = Topology(namespace, QueueLimits())
    channel = await amqp.channel()
    exchange = await channel.get_exchange(topology.requests_exchange)
    await exchange.publish(
        aio_pika.Message(
            b'{"type": "chat.request", "garbage": true}', reply_to="nowhere", user_id=broker_user(amqp)
        ),
        routing_key="chat",
    )
    dead = await channel.declare_queue(topology.dead_letter_queue, passive=True)

    async def dead_lettered() -> AbstractIncomingMessage | None:
        return await dead.get(fail=False, no_ack=True)

    message = await wait_for(dead_lettered, timeout=5, what="the invalid message dead-lettered")
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
