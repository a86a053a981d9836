"""ReplyCursor: one request's replies in order, heartbeats on silence, the deadline, restarts."""

from __future__ import annotations

import asyncio

import pytest

from broker.messages import ChatDone, Reply, TokenChunk, Usage
from gateway.replies import HEARTBEAT, DeadlineExceeded, Heartbeat, Interrupted, ReplyCursor

FAR = 3600.0  # seconds: a deadline or heartbeat no test reaches


def token(generation: str, seq: int, content: str = "x") -> TokenChunk:
    return TokenChunk(
        request_id="r", user_id="u", org_id="o", generation=generation, seq=seq, content=content
    )


def done(generation: str, chunks: int = 1) -> ChatDone:
    return ChatDone(
        request_id="r",
        user_id="u",
        org_id="o",
        generation=generation,
        session_id=None,
        model="m",
        chunks=chunks,
        done_reason="stop",
        usage=Usage(),
    )


def cursor(
    *replies: Reply,
    queue: asyncio.Queue[Reply] | None = None,
    deadline_in: float = FAR,
    heartbeat: float = FAR,
) -> ReplyCursor:
    """A cursor over ``queue`` (a new one by default), with ``replies`` already queued."""
    if queue is None:
        queue = asyncio.Queue()
    for reply in replies:
        queue.put_nowait(reply)
    now = asyncio.get_running_loop().time()
    return ReplyCursor(queue, deadline_monotonic=now + deadline_in, heartbeat=heartbeat)


async def test_replies_come_in_order_and_fix_the_generation() -> None:
    replies = [token("g1", 0, "a"), token("g1", 1, "b"), done("g1")]
    c = cursor(*replies)
    assert [await c.next() for _ in replies] == replies
    assert c.generation == "g1"
    assert (c.restarts, c.take_reset()) == (0, False)


async def test_a_reply_arriving_later_is_waited_for() -> None:
    queue: asyncio.Queue[Reply] = asyncio.Queue()
    c = cursor(queue=queue)
    reading = asyncio.create_task(c.next())
    await asyncio.sleep(0)
    assert not reading.done()
    queue.put_nowait(token("g1", 0))
    assert await asyncio.wait_for(reading, 5) == token("g1", 0)


async def test_silence_for_a_heartbeat_interval_gives_a_heartbeat() -> None:
    queue: asyncio.Queue[Reply] = asyncio.Queue()
    c = cursor(queue=queue, heartbeat=0.01)
    beat = await c.next()
    assert beat is HEARTBEAT
    assert isinstance(beat, Heartbeat)
    assert c.generation is None, "a heartbeat is not a reply"
    queue.put_nowait(token("g1", 0))
    assert await c.next() == token("g1", 0), "the cursor goes on reading after a heartbeat"


async def test_a_passed_deadline_ends_reading_even_with_replies_queued() -> None:
    c = cursor(token("g1", 0), deadline_in=-1)
    with pytest.raises(DeadlineExceeded):
        await c.next()


async def test_silence_until_the_deadline_is_deadline_exceeded_not_a_heartbeat() -> None:
    c = cursor(deadline_in=0.02, heartbeat=FAR)
    with pytest.raises(DeadlineExceeded):
        await c.next()


async def test_heartbeats_until_the_deadline_then_deadline_exceeded() -> None:
    c = cursor(deadline_in=0.1, heartbeat=0.01)
    outcomes: list[Reply | Heartbeat] = []
    for _ in range(10_000):
        try:
            outcomes.append(await c.next())
        except DeadlineExceeded:
            break
    else:
        pytest.fail("the deadline never ended the reading")
    assert outcomes and all(o is HEARTBEAT for o in outcomes)


async def test_a_restart_before_anything_was_delivered_switches_silently() -> None:
    c = cursor(token("g1", 0, "old"), token("g2", 0, "new"), token("g2", 1, "er"), done("g2"))
    assert await c.next() == token("g1", 0, "old")
    assert await c.next() == token("g2", 0, "new")
    assert (c.generation, c.restarts) == ("g2", 1)
    assert c.take_reset(), "the caller is told to drop what it collected of g1"
    assert not c.take_reset(), "once"
    assert await c.next() == token("g2", 1, "er")
    assert await c.next() == done("g2")
    assert (c.restarts, c.take_reset()) == (1, False)


async def test_a_restart_after_something_was_delivered_is_interrupted() -> None:
    c = cursor(token("g1", 0), token("g2", 0))
    await c.next()
    c.mark_delivered()  # the caller sent the first chunk to the client
    with pytest.raises(Interrupted):
        await c.next()
    assert (c.generation, c.restarts, c.take_reset()) == ("g1", 0, False)


async def test_a_second_restart_counts_again() -> None:
    c = cursor(token("g1", 0), token("g2", 0), token("g3", 0))
    for _ in range(3):
        await c.next()
    assert (c.generation, c.restarts) == ("g3", 2)


async def test_late_replies_of_an_abandoned_generation_are_dropped() -> None:
    """The first worker lost its broker connection, not its process: after the request went to
    another worker (g2) it reconnects and goes on publishing g1. Those replies are not the answer."""
    c = cursor(
        token("g1", 0, "Hel"),
        token("g2", 0, "Hello"),
        token("g1", 1, "lo"),
        token("g2", 1, " world"),
        done("g1"),
        done("g2"),
    )
    got = [await c.next() for _ in range(4)]
    assert got == [token("g1", 0, "Hel"), token("g2", 0, "Hello"), token("g2", 1, " world"), done("g2")]
    assert (c.generation, c.restarts) == ("g2", 1)


async def test_only_abandoned_replies_queued_until_the_deadline_is_deadline_exceeded() -> None:
    c = cursor(token("g1", 0), token("g2", 0), token("g1", 1), token("g1", 2), deadline_in=0.05)
    await c.next()
    await c.next()
    with pytest.raises(DeadlineExceeded):
        await c.next()


async def test_a_late_abandoned_reply_does_not_interrupt_the_answer_being_streamed() -> None:
    c = cursor(token("g1", 0), token("g2", 0, "a"), token("g1", 1), token("g2", 1, "b"))
    await c.next()
    assert await c.next() == token("g2", 0, "a")
    c.mark_delivered()  # the client has g2's first chunk now
    assert await c.next() == token("g2", 1, "b")


async def test_a_resumed_stream_drops_a_done_that_counts_text_it_never_had() -> None:
    """The race a resume can lose: the generation ended (its live done reached this gateway, the
    request's first address) before the Resume reached the worker, so no replay follows. Taking
    that done would end the stream without the answer; the resume feeds the record instead."""
    queue: asyncio.Queue[Reply] = asyncio.Queue()
    queue.put_nowait(done("g1", 2))
    now = asyncio.get_running_loop().time()
    c = ReplyCursor(queue, deadline_monotonic=now + FAR, heartbeat=FAR, resumed=True)
    assert c.next_nowait() is None
    assert c.generation is None  # so the resume goes on: re-broadcasts, reads the record
    record = [token("g1", 0, "a"), token("g1", 1, "b"), done("g1", 2)]
    for frame in record:
        queue.put_nowait(frame)
    assert [c.next_nowait() for _ in record] == record


async def test_a_done_counting_more_text_than_arrived_is_interrupted_not_a_short_answer() -> None:
    c = cursor(token("g1", 0, "a"), done("g1", 2))
    assert await c.next() == token("g1", 0, "a")
    with pytest.raises(Interrupted):
        await c.next()
