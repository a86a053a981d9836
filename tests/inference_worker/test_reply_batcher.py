"""ReplyBatcher and ReplyStream: what leaves when, in which messages and order; no broker, no model.

The exchange is a recording fake, so every assertion is about the messages a worker hands to the
broker. No clock assertions: an interval of an hour never fires, so only urgent frames (first
text, done, error) and explicit closes publish; the ticker itself is shown with a short interval
by waiting for what it sends.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import pytest
from helpers import wait_for

from broker.messages import ChatDone, ChatError, ChatRequest, ReplyBatch, TokenChunk, Usage, reply_decoder
from inference_worker.metrics import WorkerMetrics
from inference_worker.outbox import RepliesLost
from inference_worker.replies import ReplyBatcher, ReplyStream

NEVER = 3600.0  # a tick that never fires during a test
USAGE = Usage(prompt_tokens=3, completion_tokens=5)


class Exchange:
    """Records published messages; ``hold()`` makes publishes wait, ``fail`` makes them raise."""

    def __init__(self) -> None:
        self.published: list[tuple[str, aio_pika.Message]] = []
        self.arrived: asyncio.Queue[str] = asyncio.Queue()
        self.fail: Exception | None = None
        self._open = asyncio.Event()
        self._open.set()

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    async def publish(self, message: aio_pika.Message, routing_key: str, **_: Any) -> None:
        await self.arrived.put(routing_key)
        await self._open.wait()
        if self.fail is not None:
            raise self.fail
        self.published.append((routing_key, message))

    async def next_publish(self) -> str:
        return await asyncio.wait_for(self.arrived.get(), 5)

    def bodies(self, routing_key: str | None = None) -> list[Any]:
        return [reply_decoder.decode(m.body) for key, m in self.published if routing_key in (None, key)]

    def frames(self, routing_key: str | None = None) -> list[Any]:
        """Every reply published, batches unpacked, in order."""
        out: list[Any] = []
        for body in self.bodies(routing_key):
            out.extend(body.frames if isinstance(body, ReplyBatch) else [body])
        return out


def request(request_id: str = "r1", user_id: str = "u1", *, mode: str = "batch") -> ChatRequest:
    now = time.time()
    return ChatRequest(
        request_id=request_id,
        user_id=user_id,
        org_id="o",
        session_id=None,
        prompt="p",
        model="m",
        deadline=now + 30,
        created_at=now,
        reply_mode=mode,  # type: ignore[arg-type]
    )


def texts(frames: list[Any], request_id: str) -> list[str]:
    return [f.content for f in frames if isinstance(f, TokenChunk) and f.request_id == request_id]


def published(exchange: Exchange, count: int) -> Callable[[], Awaitable[bool]]:
    async def predicate() -> bool:
        return len(exchange.published) == count

    return predicate


async def finish(stream: ReplyStream) -> None:
    await stream.done(stream.done_reply(model="m", done_reason="stop", usage=USAGE, node=None))


@pytest.fixture
def metrics() -> WorkerMetrics:
    return WorkerMetrics()


@pytest.fixture
async def exchange() -> Exchange:
    return Exchange()


@pytest.fixture
async def batcher(exchange: Exchange, metrics: WorkerMetrics) -> Any:
    batcher = ReplyBatcher(exchange, interval=NEVER, max_chars=8, metrics=metrics)  # type: ignore[arg-type]
    batcher.start()
    yield batcher
    await batcher.close()


async def test_first_text_leaves_at_once_then_text_waits_for_the_tick_and_done_does_not(
    batcher: ReplyBatcher, exchange: Exchange
) -> None:
    stream = batcher.stream(request(), "gw-1", "a1")
    await stream.token("Hel")
    assert len(exchange.published) == 1, "time to first token is not delayed by the tick"
    await stream.token("lo")
    await stream.token(", ")
    assert len(exchange.published) == 1, "later text waits for the tick"
    await finish(stream)
    assert len(exchange.published) == 2, "done does not wait for the tick, and takes the text before it"
    first, second = exchange.bodies()
    assert isinstance(first, ReplyBatch) and isinstance(second, ReplyBatch)
    assert [type(f) for f in second.frames] == [TokenChunk, ChatDone]
    assert [(f.seq, f.content) for f in [*first.frames, second.frames[0]]] == [(0, "Hel"), (1, "lo, ")]
    done = second.frames[1]
    assert (done.chunks, done.generation, done.request_id, done.user_id) == (2, "a1", "r1", "u1")
    message = exchange.published[0][1]
    assert message.type == "batch" and message.correlation_id is None
    assert message.delivery_mode == aio_pika.DeliveryMode.NOT_PERSISTENT


async def test_text_of_one_attempt_is_coalesced_up_to_max_chars(
    batcher: ReplyBatcher, exchange: Exchange
) -> None:
    stream = batcher.stream(request(), "gw-1", "a1")
    for token in ("x", "ab", "cd", "e", "f", "gh", "ijklmnop", "q"):
        await stream.token(token)
    await finish(stream)
    frames = exchange.frames()
    # "x" alone (the first); then frames grow until they reach 8 characters (text is never split).
    assert texts(frames, "r1") == ["x", "abcdefgh", "ijklmnop", "q"]
    assert [f.seq for f in frames if isinstance(f, TokenChunk)] == [0, 1, 2, 3]
    assert frames[-1].chunks == 4
    assert len(exchange.published) == 2


async def test_one_message_per_reply_queue_holds_the_frames_of_all_its_streams(
    batcher: ReplyBatcher, exchange: Exchange, metrics: WorkerMetrics
) -> None:
    streams = {
        (rid, queue): batcher.stream(request(rid, f"user-{rid}"), queue, f"a-{rid}")
        for rid, queue in (("r1", "gw-1"), ("r2", "gw-1"), ("r3", "gw-2"))
    }
    for stream in streams.values():
        await stream.token("first ")  # each first text leaves at once
    exchange.published.clear()
    for i in range(20):
        for stream in streams.values():
            await stream.token(f"{i} ")
    for outbox_queue in ("gw-1", "gw-2"):
        batcher.outbox(outbox_queue, "batch").wake()  # what the tick does
    await wait_for(published(exchange, 2), timeout=5)
    assert sorted(key for key, _ in exchange.published) == ["gw-1", "gw-2"]
    gw1 = exchange.frames("gw-1")
    assert {f.request_id for f in gw1} == {"r1", "r2"}
    expected = "".join(f"{i} " for i in range(20))
    assert "".join(texts(gw1, "r1")) == "".join(texts(gw1, "r2")) == expected
    assert "".join(texts(exchange.frames("gw-2"), "r3")) == expected
    assert metrics.registry.get_sample_value("worker_reply_messages_total", {"mode": "batch"}) == 5


async def test_the_ticker_flushes_waiting_text(exchange: Exchange, metrics: WorkerMetrics) -> None:
    batcher = ReplyBatcher(exchange, interval=0.01, max_chars=100, metrics=metrics)  # type: ignore[arg-type]
    batcher.start()
    try:
        stream = batcher.stream(request(), "gw-1", "a1")
        await stream.token("first")
        await stream.token("sec")
        await stream.token("ond")
        assert await exchange.next_publish() == "gw-1"
        assert await exchange.next_publish() == "gw-1", "the tick publishes without a new token"
        await wait_for(published(exchange, 2), timeout=5)
        assert texts(exchange.frames(), "r1") == ["first", "second"]
    finally:
        await batcher.close()


async def test_message_mode_publishes_each_reply_with_its_correlation_id(
    batcher: ReplyBatcher, exchange: Exchange, metrics: WorkerMetrics
) -> None:
    stream = batcher.stream(request("r9", mode="message"), "integrator-q", "a1")
    await stream.token("one ")
    await stream.token("two ")
    await stream.token("three")
    await finish(stream)
    messages = [m for _, m in exchange.published]
    assert [m.type for m in messages] == ["token", "token", "done"]
    assert {m.correlation_id for m in messages} == {"r9"}
    assert {m.headers["x-request-id"] for m in messages} == {"r9"}  # type: ignore[index]
    bodies = exchange.bodies()
    assert [type(b) for b in bodies] == [TokenChunk, TokenChunk, ChatDone]
    assert [(b.seq, b.content) for b in bodies[:2]] == [(0, "one "), (1, "two three")]
    assert metrics.registry.get_sample_value("worker_reply_messages_total", {"mode": "message"}) == 3


async def test_urgent_frames_arriving_during_a_publish_share_the_next_message(
    batcher: ReplyBatcher, exchange: Exchange
) -> None:
    exchange.hold()
    first = batcher.stream(request("r0"), "gw-1", "a0")
    started = asyncio.create_task(first.token("t"))  # published at once, held in the exchange
    assert await exchange.next_publish() == "gw-1"
    others = [batcher.stream(request(f"r{i}"), "gw-1", f"a{i}") for i in range(1, 30)]
    waiting = [asyncio.create_task(s.token("t")) for s in others]  # their first tokens
    await asyncio.sleep(0)
    await _settle(waiting)
    assert not any(t.done() for t in waiting), "a first token returns once it is published"
    exchange.release()
    await asyncio.wait_for(asyncio.gather(started, *waiting), 5)
    assert len(exchange.published) == 2, "29 first tokens arriving during one publish share the next"
    assert len(exchange.frames()) == 30


async def test_frames_keep_their_order_while_a_publish_is_slow(
    batcher: ReplyBatcher, exchange: Exchange
) -> None:
    stream = batcher.stream(request(), "gw-1", "a1")
    exchange.hold()
    first = asyncio.create_task(stream.token("1"))
    assert await exchange.next_publish() == "gw-1"
    await stream.token("2")  # buffered behind the publish in flight
    await stream.token("3")
    done = asyncio.create_task(finish(stream))
    await _settle([done])
    assert not done.done()
    exchange.release()
    await asyncio.wait_for(asyncio.gather(first, done), 5)
    frames = exchange.frames()
    assert [type(f) for f in frames] == [TokenChunk, TokenChunk, ChatDone]
    assert texts(frames, "r1") == ["1", "23"]


async def test_a_lost_batch_fails_its_attempts_but_their_error_still_goes_out(
    batcher: ReplyBatcher, exchange: Exchange, metrics: WorkerMetrics
) -> None:
    lost = batcher.stream(request("r1"), "gw-1", "a1")
    await lost.token("first")
    await lost.token(" second")
    exchange.fail = ConnectionError("channel closed")
    other = batcher.stream(request("r2"), "gw-1", "a2")
    with pytest.raises(RepliesLost):
        await other.token("x")  # its first token's batch held r1's text too
    exchange.fail = None
    with pytest.raises(RepliesLost):
        await lost.token(" third")  # the answer has a hole: the generation must fail
    with pytest.raises(RepliesLost):
        await finish(lost)
    await lost.error("internal_error", "the worker failed")
    frames = exchange.frames()
    assert [type(f) for f in frames] == [TokenChunk, ChatError]
    assert frames[-1].request_id == "r1"
    assert metrics.registry.get_sample_value("worker_reply_publish_failures_total") == 1


async def test_an_error_reply_that_cannot_be_published_raises(
    batcher: ReplyBatcher, exchange: Exchange
) -> None:
    stream = batcher.stream(request(), "gw-1", "a1")
    exchange.fail = ConnectionError("channel closed")
    with pytest.raises(RepliesLost):
        await stream.error("model_busy", "busy")


async def test_close_publishes_what_is_left(exchange: Exchange, metrics: WorkerMetrics) -> None:
    batcher = ReplyBatcher(exchange, interval=NEVER, max_chars=100, metrics=metrics)  # type: ignore[arg-type]
    batcher.start()
    stream = batcher.stream(request(), "gw-1", "a1")
    await stream.token("a")
    await stream.token("b")
    await batcher.close()
    assert texts(exchange.frames(), "r1") == ["a", "b"]


async def test_a_job_without_reply_queue_publishes_nothing(batcher: ReplyBatcher, exchange: Exchange) -> None:
    stream = batcher.stream(request(), "", "a1")
    await stream.token("a")
    await stream.token("b")
    await finish(stream)
    await stream.error("x", "y")
    assert exchange.published == []
    assert stream.chunks == 2


@pytest.mark.parametrize("interval", [0.0, 0.005, NEVER])
async def test_every_character_arrives_exactly_once_in_order(
    exchange: Exchange, metrics: WorkerMetrics, interval: float
) -> None:
    batcher = ReplyBatcher(exchange, interval=interval, max_chars=5, metrics=metrics)  # type: ignore[arg-type]
    batcher.start()
    try:
        streams = [batcher.stream(request(f"r{i}"), "gw-1", f"a{i}") for i in range(5)]
        words = ["the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog"]

        async def speak(stream: ReplyStream) -> None:
            for word in words:
                await stream.token(word + " ")
                await asyncio.sleep(0)
            await finish(stream)

        await asyncio.wait_for(asyncio.gather(*(speak(s) for s in streams)), 5)
        frames = exchange.frames()
        for i in range(5):
            mine = [f for f in frames if f.request_id == f"r{i}"]
            assert "".join(texts(mine, f"r{i}")) == " ".join(words) + " "
            assert [f.seq for f in mine[:-1]] == list(range(len(mine) - 1))
            assert isinstance(mine[-1], ChatDone) and mine[-1].chunks == len(mine) - 1
    finally:
        await batcher.close()


async def _settle(tasks: list[asyncio.Task[Any]], rounds: int = 20) -> None:
    """A few event-loop turns (no wall-clock time) for ``tasks`` to progress as far as they can."""
    for _ in range(rounds):
        if all(t.done() for t in tasks):
            return
        await asyncio.sleep(0)
