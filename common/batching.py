"""Writing what many concurrent tasks produce as one operation per tick (group commit).

Each finished chat used to cost the worker its own broker message for the usage ledger and its own
Redis round trip for the session activity index; under load those per-chat writes (each a system
call on both ends, and for the broker a persisted, replicated message) were a large part of the
worker's and RabbitMQ's CPU per chat (README, "Benchmarks"). A :class:`TickBatcher` collects the
items submitted during one tick and hands them to its ``write`` function together; every caller
waits until the write that carried its item succeeded, or gets that write's exception, so a
caller that needs its item durable before it acks a message still can.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import structlog

__all__ = ["TickBatcher"]

T = TypeVar("T")
log = structlog.get_logger(__name__)


class TickBatcher(Generic[T]):
    """Items submitted within ``tick`` seconds of the first go to ``write`` as one list (at most
    ``max_items``: a full batch goes at once). ``aclose`` writes what waits and waits for the
    writes in flight; submitting after it raises."""

    def __init__(
        self, write: Callable[[list[T]], Awaitable[None]], *, tick: float, max_items: int = 500
    ) -> None:
        self._write = write
        self._tick = tick
        self._max_items = max(1, max_items)
        self._pending: list[tuple[T, asyncio.Future[None]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._writes: set[asyncio.Task[None]] = set()
        self._closed = False

    async def submit(self, item: T) -> None:
        """Return once ``item`` was written; raise what its write raised."""
        if self._closed:
            raise RuntimeError("the batcher is closed")
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._pending.append((item, done))
        if len(self._pending) >= self._max_items:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self._tick, self._flush)
        # A cancelled caller stops waiting; its item is still written with the others.
        await asyncio.shield(done)

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _run(self, batch: list[tuple[T, asyncio.Future[None]]]) -> None:
        try:
            await self._write([item for item, _ in batch])
        except asyncio.CancelledError:
            for _, done in batch:
                done.cancel()
            raise
        except Exception as exc:  # every waiter gets the write's outcome
            log.warning("batch_write_failed", items=len(batch), error=repr(exc))
            for _, done in batch:
                if not done.done():
                    done.set_exception(exc)
        else:
            for _, done in batch:
                if not done.done():
                    done.set_result(None)

    async def aclose(self) -> None:
        """Write what waits and wait for every write in flight (their errors reach their callers)."""
        self._closed = True
        self._flush()
        if self._writes:
            with contextlib.suppress(Exception):
                await asyncio.gather(*self._writes, return_exceptions=True)
