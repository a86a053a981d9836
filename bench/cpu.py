"""Who used the CPU during a phase: the machine, the load generator, and each role's processes.

Read from ``/proc`` (Linux); elsewhere every figure is simply missing. Percentages are of one
core, so two busy processes on a 2-core machine can show 100% each; ``cpu_ms`` is the CPU time
each role used during the phase, which the report divides by the phase's chats.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

_PROC = Path("/proc")
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
# Shared services the pipeline leans on, found by process name.
SERVICES = {"rabbitmq": ("beam.smp",), "redis": ("redis-server",)}


def _process_ticks(pid: int) -> int | None:
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def _machine_ticks() -> tuple[int, int] | None:
    """(busy, total) ticks over all cores."""
    try:
        first = (_PROC / "stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    values = [int(v) for v in first[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values) - idle, sum(values)


async def machine_busy(seconds: float = 1.0) -> float | None:
    """Percent of all cores busy over the next ``seconds``: how loud the machine is before a run."""
    before = _machine_ticks()
    await asyncio.sleep(seconds)
    after = _machine_ticks()
    if before is None or after is None or after[1] == before[1]:
        return None
    return round(100 * (after[0] - before[0]) / (after[1] - before[1]), 1)


def find_services() -> dict[str, list[int]]:
    """Pids of the local RabbitMQ and Redis servers, by process name."""
    found: dict[str, list[int]] = {role: [] for role in SERVICES}
    try:
        entries = [p for p in _PROC.iterdir() if p.name.isdigit()]
    except OSError:
        return found
    for entry in entries:
        try:
            comm = (entry / "comm").read_text().strip()
        except OSError:
            continue
        for role, names in SERVICES.items():
            if comm in names:
                found[role].append(int(entry.name))
    return found


@dataclass(frozen=True, slots=True)
class CpuUsage:
    machine_busy_percent: float | None  # of all cores together
    cores: int
    roles: dict[str, float]  # role -> percent of one core (summed over its processes); "other": the rest
    cpu_ms: dict[str, float] = field(default_factory=dict)  # role -> CPU milliseconds in the phase
    wall_s: float = 0.0


class CpuMeter:
    """Samples tick counters at ``start()`` and ``stop()``; roles map to pids."""

    def __init__(self, roles: Mapping[str, Sequence[int]]) -> None:
        self._roles = {role: list(pids) for role, pids in roles.items() if pids}
        self._start: dict[int, int] = {}
        self._machine: tuple[int, int] | None = None
        self._wall = 0.0
        self._self_cpu = 0.0

    def start(self) -> None:
        self._start = {
            pid: ticks
            for pids in self._roles.values()
            for pid in pids
            if (ticks := _process_ticks(pid)) is not None
        }
        self._machine = _machine_ticks()
        self._wall = time.monotonic()
        self._self_cpu = time.process_time()

    def stop(self) -> CpuUsage:
        wall = max(time.monotonic() - self._wall, 1e-9)
        seconds = {"loadgen": time.process_time() - self._self_cpu}
        for role, pids in self._roles.items():
            used = 0
            for pid in pids:
                now = _process_ticks(pid)
                if now is not None and pid in self._start:
                    used += now - self._start[pid]
            seconds[role] = used / _TICKS
        roles = {role: 100 * used / wall for role, used in seconds.items()}
        machine = _machine_ticks()
        busy: float | None = None
        cores = os.cpu_count() or 1
        if machine is not None and self._machine is not None:
            total = machine[1] - self._machine[1]
            busy = 100 * (machine[0] - self._machine[0]) / total if total else None
        if busy is not None:  # other users of the machine, and kernel work no process is charged for
            roles["other"] = max(0.0, busy * cores - sum(roles.values()))
            seconds["other"] = roles["other"] * wall / 100
        rounded = {role: round(share, 1) for role, share in roles.items()}
        cpu_ms = {role: round(1000 * used, 1) for role, used in seconds.items()}
        return CpuUsage(None if busy is None else round(busy, 1), cores, rounded, cpu_ms, round(wall, 3))
