"""A small process supervisor: start in order, wait for readiness, restart on crash, stop all.

Written here rather than taking supervisord/honcho because it must also wait on HTTP readiness,
pass per-process environments, and leave nothing behind on Ctrl-C; that is ~150 lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    name: str
    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    ready_url: str | None = None


@dataclass(slots=True)
class _Running:
    spec: ProcessSpec
    process: asyncio.subprocess.Process
    restarts: int = 0
    started_at: float = field(default_factory=time.monotonic)


class Supervisor:
    """Owns child processes; ``async with`` guarantees they are all gone afterwards."""

    def __init__(self, log_dir: Path, cwd: Path) -> None:
        self._log_dir = log_dir
        self._cwd = cwd
        self._running: dict[str, _Running] = {}
        self._stopping = False
        self._watchers: list[asyncio.Task[None]] = []
        self._held: set[str] = set()  # stopped on purpose (``hold``): not restarted

    async def __aenter__(self) -> Supervisor:
        self._log_dir.mkdir(parents=True, exist_ok=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def log_path(self, name: str) -> Path:
        return self._log_dir / f"{name}.log"

    async def _spawn(self, spec: ProcessSpec) -> asyncio.subprocess.Process:
        log = self.log_path(spec.name).open("ab")
        try:
            return await asyncio.create_subprocess_exec(
                *spec.argv,
                cwd=self._cwd,
                env={**os.environ, **spec.env},
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # our own process group: Ctrl-C is handled by us
            )
        finally:
            log.close()

    def pid(self, name: str) -> int:
        return self._running[name].process.pid

    def signal(self, name: str, sig: signal.Signals) -> None:
        """Send ``sig`` to one process's group (SIGKILL: it crashes, and is restarted)."""
        _signal_group(self._running[name].process, sig)

    async def hold(self, name: str, grace: float = 10.0) -> None:
        """Stop one process (SIGTERM, SIGKILL after ``grace``) and keep it down until ``release``."""
        self._held.add(name)
        process = self._running[name].process
        _signal_group(process, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout=grace)
        except TimeoutError:
            _signal_group(process, signal.SIGKILL)
            await process.wait()

    async def release(self, name: str, *, ready_timeout: float = 60.0) -> None:
        """Start a held process again with its spec; returns once it is ready."""
        self._held.discard(name)
        await self.start(self._running[name].spec, ready_timeout=ready_timeout)

    async def start(self, spec: ProcessSpec, *, ready_timeout: float = 60.0) -> None:
        process = await self._spawn(spec)
        previous = self._running.get(spec.name)
        self._running[spec.name] = _Running(spec, process, previous.restarts if previous else 0)
        if spec.ready_url:
            await self._wait_ready(spec, process, ready_timeout)
        self._watchers.append(asyncio.get_running_loop().create_task(self._watch(spec.name)))

    async def _wait_ready(
        self, spec: ProcessSpec, process: asyncio.subprocess.Process, timeout: float
    ) -> None:
        assert spec.ready_url is not None
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while time.monotonic() < deadline:
                if process.returncode is not None:
                    raise RuntimeError(
                        f"{spec.name} exited ({process.returncode}); see {self.log_path(spec.name)}"
                    )
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(spec.ready_url) as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.2)
        raise RuntimeError(f"{spec.name} not ready after {timeout:.0f}s; see {self.log_path(spec.name)}")

    async def _watch(self, name: str) -> None:
        """Restart a crashed process with back-off (at most every 5 s after repeated crashes)."""
        while not self._stopping:
            running = self._running[name]
            code = await running.process.wait()
            if self._stopping or name in self._held or self._running[name] is not running:
                return
            quick = time.monotonic() - running.started_at < 10
            delay = min(5.0, 0.5 * (2 ** min(running.restarts, 4))) if quick else 0.5
            print(
                f"  ! {name} exited with {code}; restarting in {delay:.1f}s (log: {self.log_path(name)})",
                file=sys.stderr,
            )
            await asyncio.sleep(delay)
            if self._stopping or name in self._held:
                return
            process = await self._spawn(running.spec)
            self._running[name] = _Running(running.spec, process, running.restarts + 1)

    async def stop(self, grace: float = 10.0) -> None:
        """SIGTERM every process group, wait ``grace`` seconds, then SIGKILL what is left."""
        self._stopping = True
        for watcher in self._watchers:
            watcher.cancel()
        for running in reversed(list(self._running.values())):
            _signal_group(running.process, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for running in self._running.values():
            remaining = max(0.1, deadline - time.monotonic())
            try:
                await asyncio.wait_for(running.process.wait(), timeout=remaining)
            except TimeoutError:
                _signal_group(running.process, signal.SIGKILL)
                await running.process.wait()
        self._running.clear()


def _signal_group(process: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)
