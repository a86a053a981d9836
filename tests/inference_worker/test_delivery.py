"""Every request message ends acked, requeued or dead-lettered (inference_worker.delivery), never
left unacked while the worker lives on."""

from __future__ import annotations

from typing import Any

import aio_pika
import pytest
from helpers import wait_for
from reply_support import ReplyClient, chat_request

import inference_worker.outbox
from broker.messages import ChatDone, ChatError
from inference_worker.simulator import STATE_KEY as SIM_STATE
from inference_worker.simulator import SimulatorConfig
from inference_worker.simulator_text import expected_answer
from inference_worker.worker import InferenceWorker


def _settled(worker: InferenceWorker, outcome: str) -> float:
    return (
        worker.metrics.registry.get_sample_value("worker_requests_settled_total", {"outcome": outcome}) or 0
    )


async def test_a_request_whose_error_reply_cannot_be_published_is_requeued_and_answered(
    worker: Any, amqp: Any, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The generation crashes and the error reply cannot be published either: the client was told
    nothing, so the request goes back to the queue and its next attempt answers it."""
    call_model = InferenceWorker._call_model
    publish = inference_worker.outbox.publish
    crashes: list[str] = []
    refused: list[str] = []

    async def crash_once(self: InferenceWorker, *args: Any) -> Any:
        if not crashes:
            crashes.append("crashed")
            raise RuntimeError("a bug in the generation")
        return await call_model(self, *args)

    async def refuse_the_first_error(
        exchange: Any, routing_key: str, message: aio_pika.Message, **kw: Any
    ) -> None:
        if message.type == "error" and not refused:
            refused.append(routing_key)
            raise ConnectionError("the broker went away")
        await publish(exchange, routing_key, message, **kw)

    monkeypatch.setattr(InferenceWorker, "_call_model", crash_once)
    monkeypatch.setattr(inference_worker.outbox, "publish", refuse_the_first_error)
    client = await ReplyClient.open(amqp, namespace)
    request = chat_request("requeued-0001", "u1", "are you still there?")
    await client.send(request)
    received = await client.collect({request.request_id})

    replies = received.replies[request.request_id]
    assert crashes and refused, "the first attempt crashed and its error was not published"
    assert not any(isinstance(r, ChatError) for r in replies)
    assert isinstance(replies[-1], ChatDone)
    assert "".join(r.content for r in replies[:-1]) == expected_answer(  # type: ignore[union-attr]
        "llama3.2", [{"role": "user", "content": "are you still there?"}], 24
    )
    assert worker.metrics.registry.get_sample_value("worker_redelivered_requests_total") == 1

    async def settled_twice() -> bool:
        return _settled(worker, "requeue") == 1 and _settled(worker, "ack") == 1

    await wait_for(settled_twice, what="one requeue, then one ack")
    await worker.run_until_idle(timeout=10)


async def test_shutdown_past_the_grace_period_requeues_the_request_for_another_worker(
    worker_factory: Any, simulator: Any, amqp: Any, namespace: str
) -> None:
    simulator.app[SIM_STATE].config = SimulatorConfig(ttft_ms=5, tokens_per_second=40, answer_tokens=60)
    stopping = await worker_factory(SHUTDOWN_GRACE_SECONDS="0.2")
    client = await ReplyClient.open(amqp, namespace)
    request = chat_request("handed-over-0001", "u1", "a long answer please")
    await client.send(request)

    async def generating() -> bool:
        return bool(stopping.metrics.registry.get_sample_value("worker_chunks_published_total"))

    await wait_for(generating, what="the first worker publishing its answer")
    await stopping.close()
    assert _settled(stopping, "requeue") == 1
    assert _settled(stopping, "ack") == 0

    survivor = await worker_factory()
    received = await client.collect({request.request_id})
    replies = received.replies[request.request_id]
    done = replies[-1]
    assert isinstance(done, ChatDone)
    restarted = [r for r in replies if r.generation == done.generation]
    assert len({r.generation for r in replies}) == 2, "the first attempt's text, then the new attempt's"
    assert "".join(r.content for r in restarted[:-1]) == expected_answer(  # type: ignore[union-attr]
        "llama3.2", [{"role": "user", "content": "a long answer please"}], 60
    )
    await survivor.run_until_idle(timeout=10)
    assert _settled(survivor, "ack") == 1


async def test_an_invalid_request_is_dead_lettered_once(worker: Any, amqp: Any, namespace: str) -> None:
    client = await ReplyClient.open(amqp, namespace)
    await client.requests.publish(
        aio_pika.Message(b"not json", reply_to=client.queue.name, user_id=client.publisher),
        routing_key="chat",
    )

    async def dead_lettered() -> bool:
        return _settled(worker, "dead_letter") == 1

    await wait_for(dead_lettered)
    await worker.run_until_idle(timeout=10)
    assert _settled(worker, "requeue") == _settled(worker, "ack") == 0
