"""Running a service's main coroutine: uvloop when available, clean exit on SIGTERM/SIGINT, and
shutdown steps that each finish or give up within a bound."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Coroutine
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any, Protocol, TypeVar

import structlog
from aiohttp import web

from common.logging import configure_logging
from common.server import ServiceRunner
from common.settings import DEFAULT_HTTP_READ_TIMEOUT, CommonSettings

log = structlog.get_logger(__name__)
T = TypeVar("T")


class HasCommonSettings(Protocol):
    """A service's typed settings: its own fields plus the shared ones under ``common``."""

    @property
    def common(self) -> CommonSettings: ...


S = TypeVar("S", bound=HasCommonSettings)


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


def launch(settings: S, serve: Callable[[S], Coroutine[Any, Any, None]]) -> None:
    """A service's ``main()``: log as ``settings.common`` says, then :func:`run` ``serve(settings)``."""
    common = settings.common
    configure_logging(service=common.service_name, level=common.log_level, json=common.log_json)
    run(serve(settings))


@asynccontextmanager
async def serving(
    app: web.Application,
    host: str,
    port: int,
    *,
    read_timeout: float = DEFAULT_HTTP_READ_TIMEOUT,
    **runner_options: Any,
) -> AsyncIterator[None]:
    """Serve ``app`` on host:port for the duration of the block (port 0: not at all), through
    :class:`common.server.ServiceRunner`: JSON protocol errors, ``read_timeout`` seconds for a
    request's headers and again for its body, no ``Server`` banner."""
    if not port:
        yield
        return
    runner = ServiceRunner(app, read_timeout=read_timeout, access_log=None, **runner_options)
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


class Teardown:
    """A service's shutdown steps, registered as its resources open and run last-first (the order
    of aiohttp's ``cleanup_ctx``): only what was opened is closed. Each step is bounded by
    :func:`within`; a step that fails is logged and the next one still runs."""

    def __init__(self) -> None:
        self._stack = AsyncExitStack()

    def push(self, step: str, seconds: float, close: Callable[[], Awaitable[object]]) -> None:
        """Run ``close()`` at shutdown, for at most ``seconds``."""

        async def bounded() -> None:
            try:
                await within(seconds, step, close())
            except Exception:
                log.warning("shutdown_step_failed", step=step, exc_info=True)

        self._stack.push_async_callback(bounded)

    def cancel(self, step: str, seconds: float, task: asyncio.Task[Any]) -> None:
        """Cancel the background ``task`` at shutdown and wait for it to end."""

        async def stop() -> None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

        self.push(step, seconds, stop)

    def drain(self, step: str, tasks: Collection[asyncio.Task[Any]], grace: float) -> None:
        """At shutdown, give the running ``tasks`` (a live collection: read then) ``grace`` seconds
        to finish, then cancel the rest (a consumer's unfinished message stays unacked, so the
        broker redelivers it)."""

        async def wait() -> None:
            if not tasks:
                return
            _, pending = await asyncio.wait(list(tasks), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)

        self.push(step, grace + 10, wait)

    async def enter(self, step: str, seconds: float, context: AbstractAsyncContextManager[T]) -> T:
        """Enter ``context`` now; its exit becomes a shutdown step."""
        inner = AsyncExitStack()
        entered = await inner.enter_async_context(context)
        self.push(step, seconds, inner.aclose)
        return entered

    async def close(self) -> None:
        """Run the steps registered so far, last first; a second call finds none left."""
        await self._stack.aclose()
