"""A background service (a queue consumer): its lifecycle, its burst mode, and its ``main()``.

``python -m inference_worker`` and ``python -m archiver`` are each one :func:`main` call: read the
typed settings, configure logging, start the service and its health port (``/health``, ``/ready``,
``/metrics``), run until SIGTERM/SIGINT, then close the health port and the service (which drains
what it is handling), every step bounded. ``--burst`` consumes until the queues are empty instead.
"""

from __future__ import annotations

import abc
import argparse
import asyncio
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Protocol, Self, TypeVar

from aiohttp import web

from common.runtime import HasCommonSettings, Teardown, forever, launch, serving


class ServiceSettings(HasCommonSettings, Protocol):
    """What the runner reads from a background service's settings: the health port."""

    @property
    def http_host(self) -> str: ...

    @property
    def http_port(self) -> int: ...


class Service(abc.ABC):
    """A long-running consumer with an explicit lifecycle (arq's ``Worker``).

    ``start()`` opens the resources in dependency order and registers each one's shutdown step on
    ``self.teardown``; ``close()`` runs those steps last-first, each bounded, so it closes only
    what was opened. ``async with`` does both, and closes what a failed start had opened.
    """

    def __init__(self) -> None:
        self.teardown = Teardown()

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @abc.abstractmethod
    async def start(self) -> None:
        """Connect (bounded retries) and start consuming."""

    async def close(self) -> None:
        """Stop consuming, drain what is running (bounded), then close the connections."""
        await self.teardown.close()

    @abc.abstractmethod
    async def ready(self) -> bool:
        """True when the service's dependencies answer (``/ready``)."""

    @property
    @abc.abstractmethod
    def busy(self) -> int:
        """How many messages are being handled right now."""

    @abc.abstractmethod
    async def backlog(self) -> int:
        """How many messages wait in the service's queues, not yet handed to a consumer."""

    async def run_until_idle(self, timeout: float | None = 30.0, *, interval: float = 0.05) -> None:
        """Burst mode (arq's ``burst=True``): let the consume loop run until no message waits and
        none is being handled, then return. The service stays started; ``close()`` it.

        Idle must be seen twice in a row, ``interval`` seconds apart: a message the broker has
        just handed over is, for a moment, neither waiting nor being handled yet. Raises
        ``TimeoutError`` when the service is not idle within ``timeout`` seconds (None: no limit).
        """
        idle_before = False
        async with asyncio.timeout(timeout):
            while True:
                idle = not self.busy and not await self.backlog() and not self.busy
                if idle and idle_before:
                    return
                idle_before = idle
                await asyncio.sleep(interval)


SettingsT = TypeVar("SettingsT", bound=ServiceSettings)
ServiceT = TypeVar("ServiceT", bound=Service)


async def serve(
    settings: SettingsT,
    service: Callable[[SettingsT], ServiceT],
    health_app: Callable[[ServiceT], web.Application],
    *,
    burst: bool = False,
) -> None:
    """Run ``service(settings)`` with its health port until cancelled (by a signal, see
    :func:`common.runtime.run`), or in burst mode until it is idle; then close the health port,
    then the service."""
    async with (
        service(settings) as running,
        serving(
            health_app(running),
            settings.http_host,
            settings.http_port,
            read_timeout=settings.common.http_read_timeout,
        ),
    ):
        if burst:
            await running.run_until_idle(timeout=None)
        else:
            await forever()


def main(
    settings: Callable[[], SettingsT],
    service: Callable[[SettingsT], ServiceT],
    health_app: Callable[[ServiceT], web.Application],
    *,
    prog: str,
    argv: Sequence[str] | None = None,
) -> None:
    """``python -m <service> [--burst]``: settings from the environment, then :func:`serve`."""
    parser = argparse.ArgumentParser(prog=prog, description="run until SIGTERM/SIGINT, then drain")
    parser.add_argument(
        "--burst", action="store_true", help="stop once the queues are empty and nothing is running"
    )
    burst = parser.parse_args(argv).burst

    async def run_service(loaded: SettingsT) -> None:
        await serve(loaded, service, health_app, burst=burst)

    launch(settings(), run_service)
