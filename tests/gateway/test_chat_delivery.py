"""Load shedding, client disconnects, deadlines and heartbeats."""

from __future__ import annotations

import asyncio
from typing import Any

from helpers import KeyPair, auth_header, iter_sse, read_sse, wait_for

from inference_worker.simulator import STATE_KEY as SIM_STATE


async def test_full_request_queue_answers_503_with_retry_after_at_once(
    gateway_factory: Any, keys: KeyPair
) -> None:
    # No worker consumes, so the queue fills up (quorum queues may overshoot the limit by one).
    gateway = await gateway_factory(REQUEST_QUEUE_MAX_LENGTH="2", CHAT_DEADLINE_SECONDS="3")
    headers = auth_header(keys.mint("u"))
    queued = []
    rejected = None
    for i in range(6):
        # A streamed request answers 200 as soon as the broker confirmed it, or 503 when refused.
        response = await asyncio.wait_for(
            gateway.post("/chat", json={"session_id": f"s{i}", "prompt": "hi"}, headers=headers), timeout=2
        )
        if response.status == 503:
            rejected = response
            break
        assert response.status == 200
        queued.append(response)
    assert rejected is not None, "the queue never refused a request"
    assert 2 <= len(queued) <= 3
    assert int(rejected.headers["Retry-After"]) >= 1
    assert (await rejected.json())["error"] == "queue_full"

    # The queued requests still end with a clear error at their deadline, not a hang.
    for response in queued:
        events = await read_sse(response)
        assert events[-1].event == "error"
        assert events[-1].data["error"] == "deadline_exceeded"


async def test_client_disconnect_aborts_the_model_generation(
    gateway_factory: Any, worker: Any, simulator: Any, keys: KeyPair
) -> None:
    # After the resume grace period (no resume claimed the stream), the generation is stopped.
    gateway = await gateway_factory(RESUME_GRACE_SECONDS="0.5")
    stats = simulator.app[SIM_STATE].stats
    simulator.app[SIM_STATE].config = type(simulator.app[SIM_STATE].config)(
        ttft_ms=5, tokens_per_second=40, answer_tokens=400
    )
    response = await gateway.post(
        "/chat",
        json={"session_id": "s", "prompt": "a long answer please"},
        headers=auth_header(keys.mint("u")),
    )
    async for event in iter_sse(response):
        assert event.event == "token"
        break
    response.close()  # the client goes away mid-stream

    async def aborted() -> bool:
        return bool(stats.generations_aborted == 1 and stats.in_flight == 0)

    await wait_for(aborted)
    assert stats.generations_completed == 0
    await worker.run_until_idle(timeout=15)  # the cancelled request is settled, nothing runs


async def test_deadline_ends_the_stream_with_an_error(gateway_factory: Any, keys: KeyPair) -> None:
    gateway = await gateway_factory(CHAT_DEADLINE_SECONDS="1.5", SSE_HEARTBEAT_SECONDS="0.3")
    response = await gateway.post(
        "/chat", json={"session_id": "s", "prompt": "hi"}, headers=auth_header(keys.mint("u"))
    )
    raw = await response.read()
    assert b": keep-alive" in raw, "heartbeat comments keep idle streams alive through proxies"
    assert raw.rstrip().endswith(b"}")
    assert b"event: error" in raw
    assert b"deadline_exceeded" in raw


async def test_slow_first_token_gets_heartbeats_then_the_answer(
    gateway_factory: Any, worker: Any, simulator: Any, keys: KeyPair
) -> None:
    simulator.app[SIM_STATE].config = type(simulator.app[SIM_STATE].config)(ttft_ms=1200, tokens_per_second=0)
    gateway = await gateway_factory(SSE_HEARTBEAT_SECONDS="0.3")
    response = await gateway.post(
        "/chat", json={"session_id": "s", "prompt": "hi"}, headers=auth_header(keys.mint("u"))
    )
    raw = await response.read()
    assert raw.startswith(b": keep-alive")
    assert raw.count(b": keep-alive") >= 3, "heartbeats continue while the first token is slow"
    assert b"event: done" in raw


async def test_model_error_mid_stream_ends_with_error_event(
    gateway: Any, worker: Any, simulator: Any, keys: KeyPair
) -> None:
    simulator.app[SIM_STATE].config = type(simulator.app[SIM_STATE].config)(
        ttft_ms=1, tokens_per_second=0, answer_tokens=200, fail_after_tokens=150
    )
    response = await gateway.post(
        "/chat", json={"session_id": "s", "prompt": "hi"}, headers=auth_header(keys.mint("u"))
    )
    events = await read_sse(response)
    assert events[0].event == "token"
    assert events[-1].event == "error"
    assert events[-1].data["error"] == "model_stream_failed"
