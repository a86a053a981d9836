"""TickBatcher: what is submitted within one tick is written once, together; each caller returns
only when its write succeeded and gets the write's error when it failed; a full batch goes at once;
closing writes what waits."""

from __future__ import annotations

import asyncio

import pytest

from common.batching import TickBatcher


class Sink:
    def __init__(self, fail: bool = False) -> None:
        self.writes: list[list[int]] = []
        self.fail = fail
        self.release = asyncio.Event()
        self.release.set()

    async def write(self, items: list[int]) -> None:
        await self.release.wait()
        if self.fail:
            raise ConnectionError("broker gone")
        self.writes.append(items)


async def test_items_of_one_tick_are_written_together_and_callers_wait_for_the_write() -> None:
    sink = Sink()
    sink.release.clear()
    batcher: TickBatcher[int] = TickBatcher(sink.write, tick=0.05)
    callers = [asyncio.create_task(batcher.submit(i)) for i in range(3)]
    await asyncio.sleep(0.2)
    assert not any(c.done() for c in callers)  # the write has not finished
    sink.release.set()
    await asyncio.gather(*callers)
    assert sink.writes == [[0, 1, 2]]
    await batcher.submit(3)  # a later tick: a write of its own
    assert sink.writes == [[0, 1, 2], [3]]


async def test_a_failed_write_reaches_every_caller_of_its_batch() -> None:
    batcher: TickBatcher[int] = TickBatcher(Sink(fail=True).write, tick=0.01)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)


async def test_a_full_batch_goes_at_once_and_closing_writes_what_waits() -> None:
    sink = Sink()
    batcher: TickBatcher[int] = TickBatcher(sink.write, tick=3600, max_items=2)
    await asyncio.gather(batcher.submit(1), batcher.submit(2))  # full: no waiting for the tick
    waiting = asyncio.create_task(batcher.submit(3))
    await asyncio.sleep(0.05)
    await batcher.aclose()
    await waiting
    assert sink.writes == [[1, 2], [3]]
    with pytest.raises(RuntimeError):
        await batcher.submit(4)
