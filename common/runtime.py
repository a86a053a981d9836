"""Running a service's main coroutine: uvloop when available, clean exit on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Awaitable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import structlog
from aiohttp import web

log = structlog.get_logger(__name__)


async def _until_signalled(main: Coroutine[Any, Any, None]) -> None:
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(main)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        if not task.cancelled():
            raise


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main``; a signal cancels it so its ``finally`` blocks and cleanup contexts run."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(_until_signalled(main))
    else:
        uvloop.run(_until_signalled(main))


@asynccontextmanager
async def serving(app: web.Application, host: str, port: int, **runner_options: Any) -> AsyncIterator[None]:
    """Serve ``app`` on host:port for the duration of the block (port 0: not at all)."""
    if not port:
        yield
        return
    runner = web.AppRunner(app, access_log=None, **runner_options)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, backlog=4096).start()
        yield
    finally:
        await runner.cleanup()


async def forever() -> None:
    """Wait until cancelled (by a signal, see :func:`run`)."""
    await asyncio.Event().wait()


async def within(seconds: float, step: str, awaitable: Awaitable[object]) -> None:
    """Await one shutdown step for at most ``seconds``: a peer that never answers (a broker that
    does not confirm a close, an S3 endpoint gone away) must not keep a process from exiting.
    A step cut short is logged, so a slow shutdown still shows where it stalled."""
    try:
        async with asyncio.timeout(seconds):
            await awaitable
    except TimeoutError:
        log.warning("shutdown_step_timed_out", step=step, seconds=seconds)
