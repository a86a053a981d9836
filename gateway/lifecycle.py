"""This gateway instance's own lifecycle: draining on SIGTERM and work that outlives a handler."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

__all__ = ["Lifecycle"]


class Lifecycle:
    def __init__(self) -> None:
        self.draining = False  # set on SIGTERM: /ready fails so HAProxy stops sending new requests
        self._background: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run fire-and-forget work that must outlive a cancelled handler (e.g. a cancel publish)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self, timeout: float = 5.0) -> None:
        """Let background work finish (bounded) before the connections it uses close."""
        if self._background:
            await asyncio.wait(list(self._background), timeout=timeout)
