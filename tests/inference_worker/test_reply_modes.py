"""The reply path on the real broker: integrators' per-message replies, the gateway's batches, and
how many broker messages each takes for the same chats."""

from __future__ import annotations

import asyncio
from typing import Any

from reply_support import Received, ReplyClient, chat_request

from broker.messages import ChatDone, ReplyBatch, TokenChunk
from inference_worker.simulator import STATE_KEY as SIM_STATE
from inference_worker.simulator import SimulatorConfig
from inference_worker.simulator_text import expected_answer


def _answer(prompt: str, tokens: int = 24) -> str:
    return expected_answer("llama3.2", [{"role": "user", "content": prompt}], tokens)


def _check_complete(received: Received, prompts: dict[str, str], tokens: int) -> None:
    """Every request got its whole answer, in order, seq 0.., then exactly one done."""
    for request_id, prompt in prompts.items():
        replies = received.replies[request_id]
        chunks, done = replies[:-1], replies[-1]
        assert all(isinstance(c, TokenChunk) for c in chunks), replies
        assert isinstance(done, ChatDone)
        assert "".join(c.content for c in chunks) == _answer(prompt, tokens)  # type: ignore[union-attr]
        assert [c.seq for c in chunks] == list(range(len(chunks)))  # type: ignore[union-attr]
        assert done.chunks == len(chunks)
        assert {r.generation for r in replies} == {done.generation}


async def test_an_integrator_without_reply_mode_gets_one_message_per_reply(
    worker: Any, amqp: Any, namespace: str
) -> None:
    client = await ReplyClient.open(amqp, namespace)
    request = chat_request("integrator-0001", "integrator", "hello from a batch system")
    assert request.reply_mode == "message"  # the default
    await client.send(request)
    received = await client.collect({request.request_id})
    types = [kind for kind, _, _ in received.messages]
    assert types[-1] == "done" and set(types[:-1]) == {"token"} and len(types) >= 3
    assert {correlation for _, correlation, _ in received.messages} == {request.request_id}
    assert not any(isinstance(body, ReplyBatch) for _, _, body in received.messages)
    _check_complete(received, {request.request_id: "hello from a batch system"}, 24)


async def test_batched_replies_take_far_fewer_messages_than_per_message_replies(
    worker_factory: Any, simulator: Any, amqp: Any, namespace: str
) -> None:
    """The same 40 paced chats, per message and batched: batches carry the same complete, ordered
    answers in a fraction of the broker messages (about one per tick, plus the urgent first tokens
    and dones, which share messages too)."""
    tokens = 40
    simulator.app[SIM_STATE].config = SimulatorConfig(ttft_ms=5, tokens_per_second=50, answer_tokens=tokens)
    worker = await worker_factory(CHUNK_FLUSH_MS="50")
    counts = {}
    for mode in ("message", "batch"):
        client = await ReplyClient.open(amqp, namespace)
        prompts = {f"{mode}-{i:04d}": f"question {i} asked in {mode} mode" for i in range(40)}
        for request_id, prompt in prompts.items():
            await client.send(chat_request(request_id, f"user-{request_id}", prompt, mode=mode))
        received = await client.collect(set(prompts), timeout=30)
        _check_complete(received, prompts, tokens)
        counts[mode] = (len(received.messages), received.frames)
        if mode == "batch":
            assert {kind for kind, _, _ in received.messages} == {"batch"}
            assert {correlation for _, correlation, _ in received.messages} == {None}
    (per_message, frames_m), (batched, frames_b) = counts["message"], counts["batch"]
    assert per_message == frames_m, "per-message mode: one broker message per reply"
    assert batched * 5 < frames_b, f"batch mode: {batched} messages for {frames_b} replies"
    assert batched * 5 < per_message, counts
    samples = worker.metrics.registry.get_sample_value
    assert samples("worker_reply_messages_total", {"mode": "batch"}) == batched
    assert samples("worker_reply_messages_total", {"mode": "message"}) == per_message


async def test_concurrent_batched_streams_on_one_queue_are_complete_and_ordered(
    worker: Any, simulator: Any, amqp: Any, namespace: str
) -> None:
    simulator.app[SIM_STATE].config = SimulatorConfig(ttft_ms=5, tokens_per_second=400, answer_tokens=60)
    client = await ReplyClient.open(amqp, namespace)
    prompts = {f"b-{i:04d}": f"prompt {i}" for i in range(100)}
    await asyncio.gather(
        *(
            client.send(chat_request(rid, f"u{i % 7}", p, mode="batch"))
            for i, (rid, p) in enumerate(prompts.items())
        )
    )
    received = await client.collect(set(prompts), timeout=30)
    _check_complete(received, prompts, 60)
    assert len(received.messages) < received.frames
