"""Batched replies through the gateway: the first token and the outcome do not wait for the flush
tick, what is between them does; the gateway reads the workers' batches."""

from __future__ import annotations

import asyncio
from typing import Any

from helpers import KeyPair, auth_header, iter_sse, text_of

from gateway.appkeys import METRICS
from inference_worker.simulator import STATE_KEY as SIM_STATE
from inference_worker.simulator import SimulatorConfig
from inference_worker.simulator_text import expected_answer

TICK_MS = 2000  # far longer than the whole answer takes to generate


async def test_first_token_and_done_do_not_wait_for_the_tick(
    gateway: Any, worker_factory: Any, simulator: Any, keys: KeyPair
) -> None:
    # About 250 ms of generation: 10 tokens at 40/s.
    simulator.app[SIM_STATE].config = SimulatorConfig(ttft_ms=5, tokens_per_second=40, answer_tokens=10)
    worker = await worker_factory(CHUNK_FLUSH_MS=str(TICK_MS))
    loop = asyncio.get_running_loop()
    started = loop.time()
    response = await gateway.post(
        "/chat", json={"session_id": "s", "prompt": "quick?"}, headers=auth_header(keys.mint("u"))
    )
    assert response.status == 200
    arrivals: list[tuple[float, Any]] = []
    async for event in iter_sse(response):
        arrivals.append((loop.time() - started, event))
    events = [event for _, event in arrivals]
    assert events[-1].event == "done"
    assert text_of(events) == expected_answer("llama3.2", [{"role": "user", "content": "quick?"}], 10)
    first_token_at, done_at = arrivals[0][0], arrivals[-1][0]
    assert events[0].event == "token"
    # Generous margins: behaviour (no tick in the way), not a benchmark.
    assert first_token_at < TICK_MS / 1000 / 2, f"first token after {first_token_at:.3f}s"
    assert done_at < TICK_MS / 1000 * 0.75, f"done after {done_at:.3f}s"
    # The text between first token and done left with the done, in one batch.
    assert worker.metrics.registry.get_sample_value("worker_reply_messages_total", {"mode": "batch"}) == 2
    metrics = gateway.app[METRICS].registry
    assert not metrics.get_sample_value("chat_replies_dropped_total", {"reason": "mismatched"})
