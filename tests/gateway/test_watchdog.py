"""The gateway's per-request watchdog (REPLY_STALL_SECONDS): no reply at all for that long ends
the stream with ``generation_stalled`` and withdraws the request, while a slow generation whose
worker sends Alive frames (WORKER_ALIVE_SECONDS) is not cut."""

from __future__ import annotations

from typing import Any

from helpers import KeyPair, auth_header, read_sse, text_of, wait_for

from common.keyspace import Keyspace
from inference_worker.simulator import STATE_KEY as SIM_STATE
from inference_worker.simulator import SimulatorConfig


async def test_request_no_worker_takes_up_ends_with_stalled_error_not_the_deadline(
    gateway_factory: Any, worker_factory: Any, simulator: Any, redis: Any, namespace: str, keys: KeyPair
) -> None:
    # No worker runs (as when the broker lost the request): without the watchdog the stream
    # would carry heartbeats until its 30 s deadline and end with deadline_exceeded.
    gateway = await gateway_factory(REPLY_STALL_SECONDS="1", CHAT_DEADLINE_SECONDS="30")
    response = await gateway.post(
        "/chat", json={"session_id": "s", "prompt": "hi"}, headers=auth_header(keys.mint("u"))
    )
    events = await read_sse(response)
    assert events[-1].event == "error"
    assert events[-1].data["error"] == "generation_stalled"
    request_id = response.headers["X-Chat-Request-Id"]
    marker = Keyspace(f"{namespace}:").cancelled("u", request_id)

    async def withdrawn() -> bool:  # the gateway's cancel leaves after the error event
        return bool(await redis.exists(marker))

    await wait_for(withdrawn, timeout=5, what="the stalled request's cancel marker")

    # The request is withdrawn: a worker that takes it up later does not generate it.
    worker = await worker_factory()
    await worker.run_until_idle(timeout=15)
    assert simulator.app[SIM_STATE].stats.generations_started == 0


async def test_non_streaming_request_stalled_answers_504(gateway_factory: Any, keys: KeyPair) -> None:
    gateway = await gateway_factory(REPLY_STALL_SECONDS="1")
    response = await gateway.post(
        "/chat",
        json={"session_id": "s", "prompt": "hi", "stream": False},
        headers=auth_header(keys.mint("u")),
    )
    assert response.status == 504
    assert (await response.json())["error"] == "generation_stalled"


async def test_worker_silent_mid_answer_trips_the_watchdog_and_the_session_keeps_what_the_client_got(
    gateway_factory: Any, worker_factory: Any, simulator: Any, keys: KeyPair
) -> None:
    """A worker that stops publishing (no Alive frames: WORKER_ALIVE_SECONDS far above the stall
    interval, and a model pausing between tokens) looks dead to the gateway: the client gets the
    error, and the session records the exchange as interrupted with exactly the text it got."""
    simulator.app[SIM_STATE].config = SimulatorConfig(ttft_ms=5, tokens_per_second=0.4, answer_tokens=10)
    await worker_factory(WORKER_ALIVE_SECONDS="60", CHUNK_FLUSH_MS="1")
    gateway = await gateway_factory(REPLY_STALL_SECONDS="1")
    token = keys.mint("u")
    response = await gateway.post(
        "/chat", json={"session_id": "s", "prompt": "hi"}, headers=auth_header(token)
    )
    events = await read_sse(response)
    assert events[-1].event == "error" and events[-1].data["error"] == "generation_stalled"
    got = text_of(events)
    assert got, "the first token arrived before the pause"

    session = await (await gateway.get("/sessions/s", headers=auth_header(token))).json()
    assert [t["role"] for t in session["turns"]] == ["user", "assistant"]
    assert session["turns"][1]["content"] == got
    assert session["turns"][1]["outcome"] == "interrupted"


async def test_slow_but_alive_generation_is_not_cut(
    gateway_factory: Any, worker_factory: Any, simulator: Any, keys: KeyPair
) -> None:
    # The first token takes three stall intervals; the worker's Alive frames keep the stream open.
    simulator.app[SIM_STATE].config = SimulatorConfig(ttft_ms=3000, tokens_per_second=0, answer_tokens=8)
    await worker_factory(WORKER_ALIVE_SECONDS="0.3")
    gateway = await gateway_factory(REPLY_STALL_SECONDS="1")
    response = await gateway.post(
        "/chat", json={"session_id": "s", "prompt": "hi"}, headers=auth_header(keys.mint("u"))
    )
    events = await read_sse(response)
    assert events[-1].event == "done", events[-1]
