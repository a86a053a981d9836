"""The faults, each injected under load and then lifted: the order and lengths of issue 13's table.

A fault is two steps: ``inject`` (kill, stop, cut) and, after ``hold`` seconds, ``lift`` (start
again; nothing for a SIGKILL, which the supervisor answers by restarting the process). The phase's
recovery is measured from the end of ``lift``.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from chaos.stack import ChaosStack

__all__ = ["Fault", "faults"]

Step = Callable[[ChaosStack], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Fault:
    name: str
    inject: Step
    lift: Step
    hold: float = 0.0
    wipes: bool = False  # Redis comes back empty: sessions not yet archived are gone


async def _nothing(stack: ChaosStack) -> None:
    return None


def _kill(process: str) -> Step:
    async def step(stack: ChaosStack) -> None:
        stack.supervisor.signal(process, signal.SIGKILL)

    return step


def _kill_each(processes: tuple[str, ...], times: int, every: float) -> Step:
    """SIGKILL ``times`` times, going round ``processes``, ``every`` seconds apart."""

    async def step(stack: ChaosStack) -> None:
        for i in range(times):
            if i:
                await asyncio.sleep(every)
            stack.supervisor.signal(processes[i % len(processes)], signal.SIGKILL)

    return step


def _hold(process: str) -> Step:
    async def step(stack: ChaosStack) -> None:
        await stack.supervisor.hold(process)

    return step


def _release(process: str) -> Step:
    async def step(stack: ChaosStack) -> None:
        await stack.supervisor.release(process)

    return step


async def _rabbit_stop(stack: ChaosStack) -> None:
    await stack.rabbit.ctl("stop_app")


async def _rabbit_start(stack: ChaosStack) -> None:
    await stack.rabbit.ctl("start_app")
    await stack.rabbit.wait_ready()


async def _redis_start(stack: ChaosStack) -> None:
    await stack.supervisor.release("redis")
    await stack.redis.wait_ready()


async def _s3_cut(stack: ChaosStack) -> None:
    await stack.s3_proxy.cut()


async def _s3_restore(stack: ChaosStack) -> None:
    await stack.s3_proxy.restore()


def faults(*, short: bool, workers: tuple[str, ...], gateway: str) -> list[Fault]:
    """Issue 13's faults in its order, then auth and the archiver. ``short``: CI's lengths."""
    kills = 2 if short else 8
    return [
        Fault(f"worker SIGKILL x{kills}", _kill_each(workers, kills, 2.0 if short else 3.0), _nothing),
        Fault("RabbitMQ stop_app/start_app", _rabbit_stop, _rabbit_start, 3.0 if short else 13.0),
        Fault("Redis restart (keeps nothing)", _hold("redis"), _redis_start, 1.0 if short else 5.0, True),
        Fault("S3 down", _s3_cut, _s3_restore, 5.0 if short else 30.0),
        Fault("model node down", _hold("simulator"), _release("simulator"), 3.0 if short else 10.0),
        Fault("one gateway SIGKILL", _kill(gateway), _nothing),
        Fault("auth down", _hold("auth"), _release("auth"), 3.0 if short else 10.0),
        Fault("archiver down", _hold("archiver"), _release("archiver"), 3.0 if short else 10.0),
    ]
