"""Running the project's services as real child processes in tests (``python -m <package>``)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO

import aiohttp
from helpers import wait_for
from s3server import free_port

ROOT = Path(__file__).resolve().parents[1]
HEALTH_PORT_SETTING = {
    "inference_worker": "WORKER_HTTP_PORT",
    "archiver": "ARCHIVER_HTTP_PORT",
    "gateway": "GATEWAY_PORT",
}


class ServiceProcesses:
    """Starts services, waits for their ``/ready``, and kills whatever is left at the end."""

    def __init__(self) -> None:
        self.processes: list[asyncio.subprocess.Process] = []
        self._logs: list[IO[bytes]] = []

    async def start(
        self, package: str, env: dict[str, str], *, log: Path | None = None
    ) -> tuple[asyncio.subprocess.Process, int]:
        """Start ``python -m package`` with ``env`` on a free port; returns (process, port)."""
        port = free_port()
        full_env = {**os.environ, **env, HEALTH_PORT_SETTING[package]: str(port), "PYTHONPATH": str(ROOT)}
        output = None
        if log is not None:
            output = log.open("wb")
            self._logs.append(output)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", package, env=full_env, cwd=ROOT, stdout=output, stderr=output
        )
        self.processes.append(process)

        async def ready() -> bool:
            assert process.returncode is None, f"{package} exited with {process.returncode}"
            try:
                async with (
                    aiohttp.ClientSession() as session,
                    session.get(f"http://127.0.0.1:{port}/ready") as r,
                ):
                    return r.status == 200
            except aiohttp.ClientError:
                return False

        await wait_for(ready, timeout=30)
        return process, port

    async def stop(self) -> None:
        for process in self.processes:
            if process.returncode is None:
                process.terminate()
        for process in self.processes:
            try:
                await asyncio.wait_for(process.wait(), timeout=15)
            except TimeoutError:
                process.kill()
                await process.wait()
        for handle in self._logs:
            handle.close()


@asynccontextmanager
async def service_processes() -> AsyncIterator[ServiceProcesses]:
    services = ServiceProcesses()
    try:
        yield services
    finally:
        await services.stop()
