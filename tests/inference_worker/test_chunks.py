"""ChunkCoalescer: what is emitted, when, in which order; no broker, no model, no clock assertions."""

from __future__ import annotations

import asyncio

import pytest

from inference_worker.chunks import ChunkCoalescer

NEVER = 3600.0  # a flush interval that never fires during a test: only size, flush or aclose emit


class Sink:
    """Records emitted chunks; ``hold()`` makes the next emits wait until ``release()``."""

    def __init__(self) -> None:
        self.chunks: list[str] = []
        self.arrived: asyncio.Queue[str] = asyncio.Queue()
        self._open = asyncio.Event()
        self._open.set()

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    async def __call__(self, text: str) -> None:
        await self.arrived.put(text)
        await self._open.wait()
        self.chunks.append(text)

    async def next_arrival(self) -> str:
        return await asyncio.wait_for(self.arrived.get(), 5)


async def settle(task: asyncio.Task[None], *, rounds: int = 20) -> None:
    """Give ``task`` a few event-loop turns (no wall-clock time) to progress as far as it can."""
    for _ in range(rounds):
        if task.done():
            return
        await asyncio.sleep(0)


async def test_first_text_is_emitted_at_once_then_text_is_buffered() -> None:
    sink = Sink()
    coalescer = ChunkCoalescer(sink, flush_interval=NEVER, max_chars=100)
    await coalescer.add("Hel")
    assert sink.chunks == ["Hel"], "time to first token is not delayed by the interval"
    await coalescer.add("lo")
    await coalescer.add(", ")
    assert sink.chunks == ["Hel"]
    assert coalescer.pending
    await coalescer.aclose()
    assert sink.chunks == ["Hel", "lo, "]
    assert not coalescer.pending
    assert (coalescer.emitted_chunks, coalescer.emitted_chars) == (2, 7)


async def test_first_text_waits_too_when_first_immediately_is_off() -> None:
    sink = Sink()
    coalescer = ChunkCoalescer(sink, flush_interval=NEVER, max_chars=100, first_immediately=False)
    await coalescer.add("a")
    assert sink.chunks == []
    await coalescer.aclose()
    assert sink.chunks == ["a"]


async def test_reaching_max_chars_emits_the_buffer_as_one_chunk() -> None:
    sink = Sink()
    coalescer = ChunkCoalescer(sink, flush_interval=NEVER, max_chars=6)
    for token in ("x", "ab", "cd", "e", "f", "gh", "ijklmnop", "q"):
        await coalescer.add(token)
    # "x" first; "ab"+"cd"+"e"+"f" reaches 6; "gh"+"ijklmnop" passes 6 (a chunk may exceed it,
    # text is never split); "q" waits for the close.
    assert sink.chunks == ["x", "abcdef", "ghijklmnop"]
    await coalescer.aclose()
    assert sink.chunks == ["x", "abcdef", "ghijklmnop", "q"]
    assert coalescer.emitted_chars == len("xabcdefghijklmnopq")


async def test_the_interval_flushes_what_is_buffered() -> None:
    sink = Sink()
    coalescer = ChunkCoalescer(sink, flush_interval=0.01, max_chars=1000)
    await coalescer.add("first")
    await coalescer.add("sec")
    await coalescer.add("ond")
    assert await sink.next_arrival() == "first"
    assert await sink.next_arrival() == "second", "the timer emits the buffer without a new add"
    await coalescer.aclose()
    assert sink.chunks == ["first", "second"]


async def test_no_interval_emits_every_text() -> None:
    sink = Sink()
    coalescer = ChunkCoalescer(sink, flush_interval=0, max_chars=1000)
    for token in ("a", "b", "c"):
        await coalescer.add(token)
    assert sink.chunks == ["a", "b", "c"]


async def test_empty_text_is_ignored() -> None:
    sink = Sink()
    coalescer = ChunkCoalescer(sink, flush_interval=0, max_chars=10)
    await coalescer.add("")
    await coalescer.aclose()
    assert sink.chunks == []
    assert coalescer.emitted_chunks == 0


async def test_discard_drops_buffered_text_and_its_timer() -> None:
    sink = Sink()
    coalescer = ChunkCoalescer(sink, flush_interval=NEVER, max_chars=100)
    await coalescer.add("kept")
    await coalescer.add("dropped")
    coalescer.discard()
    assert not coalescer.pending
    await coalescer.aclose()
    assert sink.chunks == ["kept"]
    await coalescer.add(" after")  # the coalescer stays usable: the next text is buffered again
    await coalescer.aclose()
    assert sink.chunks == ["kept", " after"]


async def test_aclose_waits_for_a_flush_the_timer_started() -> None:
    sink = Sink()
    coalescer = ChunkCoalescer(sink, flush_interval=0.01, max_chars=100)
    await coalescer.add("a")
    sink.hold()
    await coalescer.add("b")
    assert await sink.next_arrival() == "a"
    assert await sink.next_arrival() == "b"  # the timer's flush is emitting, and held
    closing = asyncio.create_task(coalescer.aclose())
    await settle(closing)
    assert not closing.done(), "aclose returned while a chunk was still being emitted"
    sink.release()
    await asyncio.wait_for(closing, 5)
    assert sink.chunks == ["a", "b"]


async def test_aclose_raises_what_a_timer_flush_failed_with() -> None:
    """A chunk the timer could not publish must fail the generation, not vanish in a task."""
    sink = Sink()

    async def emit(text: str) -> None:
        await sink(text)
        if text == "b":
            raise ConnectionError("broker gone")

    coalescer = ChunkCoalescer(emit, flush_interval=0.01, max_chars=100)
    await coalescer.add("a")
    sink.hold()
    await coalescer.add("b")
    assert await sink.next_arrival() == "a"
    assert await sink.next_arrival() == "b"
    closing = asyncio.create_task(coalescer.aclose())
    await settle(closing)
    sink.release()
    with pytest.raises(ConnectionError, match="broker gone"):
        await asyncio.wait_for(closing, 5)


async def test_the_next_add_raises_what_a_timer_flush_failed_with() -> None:
    failed = asyncio.Event()

    async def emit(text: str) -> None:
        if text == "b":
            failed.set()
            raise ConnectionError("broker gone")

    coalescer = ChunkCoalescer(emit, flush_interval=0.01, max_chars=100)
    await coalescer.add("a")
    await coalescer.add("b")
    await asyncio.wait_for(failed.wait(), 5)  # set in the same step as the raise: stored by now
    with pytest.raises(ConnectionError, match="broker gone"):
        await coalescer.add("c")


async def test_chunks_keep_their_order_while_an_emit_is_slow() -> None:
    sink = Sink()
    coalescer = ChunkCoalescer(sink, flush_interval=NEVER, max_chars=4)
    sink.hold()
    first = asyncio.create_task(coalescer.add("1"))  # emitted at once, held in the sink
    assert await sink.next_arrival() == "1"
    await coalescer.add("2")  # an emit is in progress: buffered, not a second "first" chunk
    big = asyncio.create_task(coalescer.add("345"))  # reaches max_chars: waits for the first emit
    await settle(big)
    assert not big.done()
    assert sink.chunks == []
    sink.release()
    await asyncio.wait_for(asyncio.gather(first, big), 5)
    await coalescer.aclose()
    assert sink.chunks == ["1", "2345"]


async def test_concurrent_adds_arrive_whole_and_in_order() -> None:
    async def slow_emit(text: str) -> None:
        await asyncio.sleep(0)  # every emit yields, so adds and flushes interleave
        emitted.append(text)

    emitted: list[str] = []
    coalescer = ChunkCoalescer(slow_emit, flush_interval=0.001, max_chars=7)
    tokens = [f"<{i}>" for i in range(200)]
    await asyncio.gather(*(coalescer.add(token) for token in tokens))
    await coalescer.aclose()
    assert "".join(emitted) == "".join(tokens)
    assert coalescer.emitted_chunks == len(emitted)
    assert coalescer.emitted_chars == len("".join(tokens))
    assert all(chunk for chunk in emitted)


async def test_cancel_stops_a_pending_timer_flush() -> None:
    sink = Sink()
    coalescer = ChunkCoalescer(sink, flush_interval=0.01, max_chars=100)
    await coalescer.add("a")
    sink.hold()
    await coalescer.add("b")
    assert await sink.next_arrival() == "a"
    assert await sink.next_arrival() == "b"  # the timer task is inside emit
    coalescer.cancel()
    sink.release()
    await asyncio.sleep(0)
    assert sink.chunks == ["a"], "the cancelled flush never completed its emit"
    assert not coalescer.pending


@pytest.mark.parametrize("interval", [0.0, 0.01, NEVER])
async def test_every_character_is_emitted_exactly_once(interval: float) -> None:
    sink = Sink()
    coalescer = ChunkCoalescer(sink, flush_interval=interval, max_chars=5)
    text = "the quick brown fox jumps over the lazy dog"
    for word in text.split(" "):
        await coalescer.add(word + " ")
    await coalescer.aclose()
    assert "".join(sink.chunks) == text + " "
