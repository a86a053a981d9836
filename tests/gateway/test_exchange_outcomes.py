"""The session records what happened, once (common/exchanges.py): a request refused at the door
leaves no trace and is never generated later; a redelivered request appends nothing twice."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import aio_pika
import msgspec
from helpers import KeyPair, auth_header, broker_user, wait_for
from tcp_proxy import TcpProxy, via

from broker.messages import ChatDone, ChatRequest, TokenChunk, encoder, reply_decoder
from broker.topology import REQUEST_ROUTING_KEY, QueueLimits, Topology
from common.keyspace import Keyspace
from inference_worker.simulator import STATE_KEY as SIM_STATE
from inference_worker.simulator_text import expected_answer


async def _refused(gateway: Any, token: str, proxy: TcpProxy) -> None:
    """A chat whose publish reaches the broker but whose confirm never comes back: 503."""
    proxy.hold_answers()
    try:
        response = await gateway.post(
            "/chat", json={"session_id": "s", "prompt": "hi", "stream": False}, headers=auth_header(token)
        )
        assert response.status == 503
        assert (await response.json())["error"] == "broker_unavailable"
    finally:
        proxy.hold_answers(False)


async def _session_status(gateway: Any, token: str) -> int:
    return int((await gateway.get("/sessions/s", headers=auth_header(token))).status)


async def test_refused_request_that_reached_the_queue_is_never_generated_nor_recorded(
    gateway_factory: Any,
    worker_factory: Any,
    simulator: Any,
    broker_proxy: TcpProxy,
    rabbitmq_url: str,
    redis: Any,
    namespace: str,
    keys: KeyPair,
) -> None:
    gateway = await gateway_factory(
        RABBITMQ_URL=via(rabbitmq_url, broker_proxy), PUBLISH_TIMEOUT_SECONDS="0.5"
    )
    token = keys.mint("u")
    await _refused(gateway, token, broker_proxy)

    worker = await worker_factory()  # the copy in the queue is taken up now
    await worker.run_until_idle(timeout=15)
    assert simulator.app[SIM_STATE].stats.generations_started == 0
    assert await _session_status(gateway, token) == 404
    assert [k async for k in redis.scan_iter(match=f"{namespace}:session*")] == []


async def test_refused_request_generated_before_the_refusal_leaves_no_trace(
    gateway_factory: Any,
    worker: Any,
    simulator: Any,
    broker_proxy: TcpProxy,
    rabbitmq_url: str,
    keys: KeyPair,
) -> None:
    # The worker answers (and commits) while the gateway still waits for the lost confirm: the
    # refusal removes the exchange again, so the session says what the client was told.
    gateway = await gateway_factory(RABBITMQ_URL=via(rabbitmq_url, broker_proxy), PUBLISH_TIMEOUT_SECONDS="1")
    token = keys.mint("u")
    await _refused(gateway, token, broker_proxy)
    await worker.run_until_idle(timeout=15)
    assert simulator.app[SIM_STATE].stats.generations_completed == 1  # it was answered meanwhile
    assert await _session_status(gateway, token) == 404


async def test_redelivered_request_is_answered_from_its_record_and_appended_once(
    gateway: Any, worker: Any, simulator: Any, amqp: Any, namespace: str, keys: KeyPair
) -> None:
    """The same request delivered again after it was answered (a worker died between its commit
    and its ack, say): no second generation, no second answer in the session, and the waiting
    client gets the recorded answer again."""
    channel = await amqp.channel()
    replies = await channel.declare_queue(exclusive=True)
    topology = Topology(namespace, QueueLimits())
    exchange = await channel.get_exchange(topology.requests_exchange)
    now = time.time()
    request = ChatRequest(
        request_id=uuid.uuid4().hex,
        user_id="u",
        org_id="org-test",
        session_id="s",
        prompt="hello",
        model="llama3.2",
        deadline=now + 30,
        created_at=now,
    )
    received: list[Any] = []

    async def on_reply(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        received.append(reply_decoder.decode(message.body))

    await replies.consume(on_reply, no_ack=True)

    def done_count() -> int:
        return sum(isinstance(r, ChatDone) for r in received)

    for copy in (1, 2):
        message = aio_pika.Message(
            encoder.encode(request),
            reply_to=replies.name,
            correlation_id=request.request_id,
            user_id=broker_user(amqp),
        )
        await exchange.publish(message, routing_key=REQUEST_ROUTING_KEY)

        async def answered(n: int = copy) -> bool:
            return done_count() == n

        await wait_for(answered)
    await worker.run_until_idle(timeout=15)

    assert simulator.app[SIM_STATE].stats.generations_started == 1
    expected = expected_answer("llama3.2", [{"role": "user", "content": "hello"}], 24)
    dones = [i for i, r in enumerate(received) if isinstance(r, ChatDone)]
    first = "".join(r.content for r in received[: dones[0]] if isinstance(r, TokenChunk))
    again = "".join(r.content for r in received[dones[0] + 1 : dones[1]] if isinstance(r, TokenChunk))
    assert first == again == expected
    session = await (await gateway.get("/sessions/s", headers=auth_header(keys.mint("u")))).json()
    assert [t["role"] for t in session["turns"]] == ["user", "assistant"]
    assert session["turns"][1]["content"] == expected
    assert session["turns"][1]["outcome"] == "done"
    await channel.close()


async def test_concurrent_duplicates_commit_one_exchange(
    gateway: Any, worker: Any, amqp: Any, namespace: str, keys: KeyPair, redis: Any
) -> None:
    """Two copies running at once (both generate): the first commit wins, the second is a no-op."""
    channel = await amqp.channel()
    topology = Topology(namespace, QueueLimits())
    exchange = await channel.get_exchange(topology.requests_exchange)
    replies = await channel.declare_queue(exclusive=True)
    now = time.time()
    body = encoder.encode(
        ChatRequest(
            request_id=uuid.uuid4().hex,
            user_id="u",
            org_id="org-test",
            session_id="s",
            prompt="hello",
            model="llama3.2",
            deadline=now + 30,
            created_at=now,
        )
    )
    await asyncio.gather(
        *(
            exchange.publish(
                aio_pika.Message(body, reply_to=replies.name, user_id=broker_user(amqp)),
                routing_key=REQUEST_ROUTING_KEY,
            )
            for _ in range(2)
        )
    )
    await worker.run_until_idle(timeout=15)
    turns = await redis.lrange(Keyspace(f"{namespace}:").session_turns("u", "s"), 0, -1)
    assert len(turns) == 2, [msgspec.json.decode(t) for t in turns]
    await channel.close()


async def test_model_error_mid_stream_records_what_the_client_got_as_failed(
    gateway: Any, worker: Any, simulator: Any, keys: KeyPair
) -> None:
    from helpers import read_sse, text_of

    from inference_worker.simulator import SimulatorConfig

    simulator.app[SIM_STATE].config = SimulatorConfig(
        ttft_ms=1, tokens_per_second=0, answer_tokens=200, fail_after_tokens=150
    )
    token = keys.mint("u")
    response = await gateway.post(
        "/chat", json={"session_id": "s", "prompt": "hi"}, headers=auth_header(token)
    )
    events = await read_sse(response)
    assert events[-1].event == "error"
    await worker.run_until_idle(timeout=15)
    session = await (await gateway.get("/sessions/s", headers=auth_header(token))).json()
    assert [t["role"] for t in session["turns"]] == ["user", "assistant"]
    assert session["turns"][1]["content"] == text_of(events)
    assert session["turns"][1]["outcome"] == "failed"
