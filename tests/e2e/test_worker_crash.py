"""A worker process killed with SIGKILL mid-generation: the request is redelivered to another worker.

If nothing reached the client yet the answer completes transparently; otherwise the client gets a
clear ``generation_interrupted`` error and the stream ends.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from helpers import KeyPair, auth_header, iter_sse, text_of, wait_for
from processes import service_processes

from inference_worker.simulator import STATE_KEY as SIM_STATE
from inference_worker.simulator import SimulatorConfig
from inference_worker.simulator_text import expected_answer


@pytest.fixture
async def worker_process(worker_env: dict[str, str]) -> AsyncIterator[Callable[[], Any]]:
    """Start ``python -m inference_worker`` as a real process; yields a starter returning it."""
    async with service_processes() as services:

        async def start() -> asyncio.subprocess.Process:
            process, _ = await services.start("inference_worker", worker_env)
            return process

        yield start


async def test_kill_after_tokens_reached_client_gives_generation_interrupted(
    gateway: Any, worker_process: Any, worker_factory: Any, simulator: Any, keys: KeyPair
) -> None:
    simulator.app[SIM_STATE].config = SimulatorConfig(ttft_ms=5, tokens_per_second=25, answer_tokens=150)
    doomed = await worker_process()
    response = await gateway.post(
        "/chat", json={"session_id": "s", "prompt": "tell me a story"}, headers=auth_header(keys.mint("u"))
    )
    events = aiter(iter_sse(response))
    first = await anext(events)
    assert first.event == "token"

    doomed.send_signal(signal.SIGKILL)
    await asyncio.wait_for(doomed.wait(), timeout=10)
    # The survivor answers the redelivered request at once, racing the gateway's own outcome.
    simulator.app[SIM_STATE].config = SimulatorConfig(ttft_ms=5, tokens_per_second=0, answer_tokens=150)
    survivor = await worker_factory()  # takes the redelivered request

    rest = [event async for event in events]
    assert rest[-1].event == "error"
    assert rest[-1].data["error"] == "generation_interrupted"
    assert all(e.event == "token" for e in rest[:-1])
    # The gateway cancels the restarted generation: the survivor's slot is freed.
    await survivor.run_until_idle(timeout=15)
    # The session says what the client saw, once: the text it got, interrupted; not the
    # survivor's full answer.
    session = await (await gateway.get("/sessions/s", headers=auth_header(keys.mint("u")))).json()
    assert [t["role"] for t in session["turns"]] == ["user", "assistant"]
    assert session["turns"][1]["content"] == text_of([first, *rest])
    assert session["turns"][1]["outcome"] == "interrupted"


@pytest.mark.parametrize("stream", [True, False])
async def test_kill_before_first_token_completes_transparently(
    gateway: Any, worker_process: Any, worker_factory: Any, simulator: Any, keys: KeyPair, stream: bool
) -> None:
    state = simulator.app[SIM_STATE]
    state.config = SimulatorConfig(ttft_ms=2000, tokens_per_second=0, answer_tokens=24)
    doomed = await worker_process()
    prompt = "are you there?"
    pending = asyncio.create_task(
        gateway.post(
            "/chat",
            json={"session_id": "s", "prompt": prompt, "stream": stream},
            headers=auth_header(keys.mint("u")),
        )
    )

    async def generating() -> bool:
        return bool(state.stats.in_flight == 1)

    await wait_for(generating)  # the doomed worker took the request and called the model
    doomed.send_signal(signal.SIGKILL)
    await asyncio.wait_for(doomed.wait(), timeout=10)
    state.config = SimulatorConfig(ttft_ms=5, tokens_per_second=0, answer_tokens=24)
    await worker_factory()

    response = await pending
    expected = expected_answer("llama3.2", [{"role": "user", "content": prompt}], 24)
    assert response.status == 200
    if stream:
        events = [event async for event in iter_sse(response)]
        assert events[-1].event == "done"
        assert text_of(events) == expected
        assert [e.data["seq"] for e in events if e.event == "token"] == list(
            range(len([e for e in events if e.event == "token"]))
        )
    else:
        assert (await response.json())["response"] == expected


async def test_gateway_drains_on_sigterm(gateway_env: dict[str, str], amqp: Any) -> None:
    """SIGTERM: /ready fails at once (HAProxy stops routing here) and the process exits cleanly.
    (``amqp``: its teardown deletes the queues the gateway process declared.)"""
    async with service_processes() as services:
        process, port = await services.start("gateway", {**gateway_env, "DRAIN_SECONDS": "2"})
        process.send_signal(signal.SIGTERM)

        async def draining() -> bool:
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"http://127.0.0.1:{port}/ready") as response,
            ):
                return response.status == 503 and (await response.json())["error"] == "draining"

        await wait_for(draining, timeout=10)
        assert await asyncio.wait_for(process.wait(), timeout=30) == 0


async def test_a_frozen_worker_trips_the_gateway_watchdog(
    gateway_factory: Any, worker_process: Any, simulator: Any, keys: KeyPair
) -> None:
    """A worker process stopped (SIGSTOP) mid-answer sends nothing more, not even Alive frames:
    the client gets ``generation_stalled`` after REPLY_STALL_SECONDS, not heartbeats until the
    deadline, and the session keeps exactly the text it got."""
    simulator.app[SIM_STATE].config = SimulatorConfig(ttft_ms=5, tokens_per_second=20, answer_tokens=400)
    gateway = await gateway_factory(REPLY_STALL_SECONDS="2", CHAT_DEADLINE_SECONDS="60")
    frozen = await worker_process()
    token = keys.mint("u")
    response = await gateway.post(
        "/chat", json={"session_id": "s", "prompt": "hi"}, headers=auth_header(token)
    )
    events = aiter(iter_sse(response))
    first = await anext(events)
    assert first.event == "token"
    frozen.send_signal(signal.SIGSTOP)
    try:
        rest = [event async for event in events]
    finally:
        frozen.send_signal(signal.SIGCONT)
    assert rest[-1].event == "error"
    assert rest[-1].data["error"] == "generation_stalled"
    session = await (await gateway.get("/sessions/s", headers=auth_header(token))).json()
    assert session["turns"][1]["content"] == text_of([first, *rest])
    assert session["turns"][1]["outcome"] == "interrupted"
