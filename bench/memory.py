"""Resident memory of each role's processes during a phase: at the start, at the peak, at the end.

Read from ``/proc/<pid>/status`` (Linux); elsewhere every figure is simply missing. A role's
figure is the sum over its processes at one sampling moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

_PROC = Path("/proc")
SAMPLE_INTERVAL = 1.0


def rss_bytes(pid: int) -> int | None:
    """Resident set size of one process; None when it is gone or unreadable."""
    try:
        with open(_PROC / str(pid) / "status", "rb") as status:
            for line in status:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        return None
    return None


@dataclass(frozen=True, slots=True)
class RssFigures:
    """Megabytes, summed over the role's processes."""

    start_mb: float
    peak_mb: float
    end_mb: float
    growth_mb: float  # how far the peak rose above the start

    @classmethod
    def of(cls, values: Sequence[float]) -> RssFigures:
        return cls(values[0], max(values), values[-1], round(max(values) - values[0], 1))


@dataclass(frozen=True, slots=True)
class RssSample:
    t: float  # seconds since the sampler started
    rss_mb: dict[str, float]
    open_streams: int | None = None


@dataclass(slots=True)
class RssSampler:
    """Samples every ``interval`` seconds between ``start()`` and ``stop()``; ``loadgen`` is this process.

    ``gauge`` (optional) is read at each sample, e.g. the number of open streams, and kept in the
    timeline alongside the memory figures.
    """

    roles: Mapping[str, Sequence[int]]
    interval: float = SAMPLE_INTERVAL
    gauge: Callable[[], int] | None = None
    timeline: list[RssSample] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None
    _started: float = 0.0

    def _pids(self) -> dict[str, list[int]]:
        pids = {role: list(p) for role, p in self.roles.items() if p}
        pids["loadgen"] = [os.getpid()]
        return pids

    def sample(self) -> RssSample:
        figures: dict[str, float] = {}
        for role, pids in self._pids().items():
            values = [v for pid in pids if (v := rss_bytes(pid)) is not None]
            if values:
                figures[role] = round(sum(values) / 2**20, 1)
        gauge = self.gauge() if self.gauge is not None else None
        return RssSample(round(time.monotonic() - self._started, 1), figures, gauge)

    def start(self) -> None:
        self._started = time.monotonic()
        self.timeline = [self.sample()]
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.timeline.append(self.sample())

    async def stop(self) -> dict[str, RssFigures]:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.timeline.append(self.sample())
        return summarize(self.timeline)


def summarize(timeline: Sequence[RssSample]) -> dict[str, RssFigures]:
    """Per role: the first, highest and last sample that has it."""
    series: dict[str, list[float]] = {}
    for sample in timeline:
        for role, mb in sample.rss_mb.items():
            series.setdefault(role, []).append(mb)
    return {role: RssFigures.of(values) for role, values in series.items()}
