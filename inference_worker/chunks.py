"""Coalescing of model tokens into chunks: one broker message per few milliseconds, not per token."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


class ChunkCoalescer:
    """Buffers text and emits it when ``max_chars`` is reached or ``flush_interval`` has passed.

    The first text is emitted at once so time-to-first-token is not delayed by the interval.
    Emission is serialised by a lock, so chunks keep their order. An emit the timer started that
    fails is raised by the next :meth:`add` or by :meth:`aclose`, never lost in its task.
    """

    def __init__(
        self,
        emit: Callable[[str], Awaitable[None]],
        *,
        flush_interval: float,
        max_chars: int,
        first_immediately: bool = True,
    ) -> None:
        self._emit = emit
        self._interval = flush_interval
        self._max_chars = max_chars
        self._first_immediately = first_immediately
        self._buffer: list[str] = []
        self._size = 0
        self._lock = asyncio.Lock()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_task: asyncio.Task[None] | None = None
        self._timer_failure: Exception | None = None
        self.emitted_chunks = 0
        self.emitted_chars = 0

    @property
    def pending(self) -> bool:
        return self._size > 0

    async def add(self, text: str) -> None:
        self._raise_timer_failure()
        if not text:
            return
        self._buffer.append(text)
        self._size += len(text)
        if (
            self._size >= self._max_chars
            or self._interval <= 0
            or (self._first_immediately and self.emitted_chunks == 0 and not self._lock.locked())
        ):
            await self.flush()
        elif self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._interval, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_task = asyncio.get_running_loop().create_task(self._flush_on_timer())

    async def _flush_on_timer(self) -> None:
        try:
            await self.flush()
        except Exception as exc:  # nobody awaits this task: keep the error for the caller
            self._timer_failure = exc

    def _raise_timer_failure(self) -> None:
        failure, self._timer_failure = self._timer_failure, None
        if failure is not None:
            raise failure

    async def flush(self) -> None:
        async with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if not self._buffer:
                return
            text = "".join(self._buffer)
            self._buffer.clear()
            self._size = 0
            await self._emit(text)
            self.emitted_chunks += 1
            self.emitted_chars += len(text)

    def discard(self) -> None:
        """Drop buffered text that was never emitted (the generation is being retried elsewhere)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._buffer.clear()
        self._size = 0

    async def aclose(self) -> None:
        """Emit what is left; wait for a timer-triggered flush still running."""
        await self.flush()
        if self._timer_task is not None and not self._timer_task.done():
            await self._timer_task
        self._raise_timer_failure()

    def cancel(self) -> None:
        self.discard()
        if self._timer_task is not None and not self._timer_task.done():
            self._timer_task.cancel()
