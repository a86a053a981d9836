"""A private HAProxy in front of the bench's gateways: ``haproxy/haproxy.cfg``, plain HTTP, free ports.

One HAProxy process holds at most (open-file limit - spare) / 2 streams, two descriptors each.
Where the hard limit is too low for the streams asked for (20,000 here: 9,950 streams), the bench
starts several processes on the same port: HAProxy binds with ``SO_REUSEPORT``, so the kernel
spreads new connections over them, as ``nbproc`` once did. Each has a stats port of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bench.cluster import ROOT, ClusterError, terminate
from devstack.config import free_port
from devstack.haproxy import GATEWAY_SLOTS, server_status
from devstack.haproxy import gateway_slots as devstack_gateway_slots
from devstack.limits import haproxy_maxconn, haproxy_processes

HAPROXY_CFG = ROOT / "haproxy" / "haproxy.cfg"
STREAM_MARGIN = 1000  # connections beyond the bench's streams: health checks, stragglers
READY_TIMEOUT = 20.0


def gateway_slots(gateway_urls: list[str]) -> dict[str, str]:
    """``GATEWAY1..3`` for haproxy.cfg (``devstack.haproxy``); more gateways than slots: refused."""
    try:
        return devstack_gateway_slots(gateway_urls)
    except ValueError as exc:
        raise ClusterError(f"--via-haproxy: {exc}") from None


@dataclass(slots=True)
class HAProxyFleet:
    """``start()`` the processes, wait until they see the gateways UP; ``stop()`` ends them."""

    gateway_urls: list[str]
    streams: int
    open_files: int
    log_dir: Path
    url: str = ""
    maxconn: int = 0
    _processes: list[asyncio.subprocess.Process] = field(default_factory=list)
    _stats_urls: list[str] = field(default_factory=list)

    def pids(self) -> list[int]:
        return [p.pid for p in self._processes]

    async def start(self) -> None:
        binary = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")
        if binary is None:
            raise ClusterError("--via-haproxy: haproxy is not installed (scripts/ensure-services.sh haproxy)")
        self.maxconn = haproxy_maxconn(self.open_files, self.streams + STREAM_MARGIN)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        slots = gateway_slots(self.gateway_urls)
        for i in range(haproxy_processes(self.streams + STREAM_MARGIN, self.maxconn)):
            stats_port = free_port()
            env = {
                "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
                "BIND_ADDR": "127.0.0.1",
                "HTTP_PORT": str(port),
                "HTTPS_PORT": str(free_port()),
                "TLS_ENABLED": "0",
                "STATS_PORT": str(stats_port),
                "AUTH_ADDR": f"127.0.0.1:{free_port()}",
                "CHECK_INTER": "500ms",
                "IP_REQUESTS_PER_10S": "1000000000",  # one client address makes every request here
                "MAXCONN": str(self.maxconn),
                **slots,
            }
            log = self.log_dir / f"haproxy-{i}.log"
            with log.open("wb") as out:
                process = await asyncio.create_subprocess_exec(
                    binary, "-db", "-f", str(HAPROXY_CFG), env=env, stdin=asyncio.subprocess.DEVNULL,
                    stdout=out, stderr=asyncio.subprocess.STDOUT,
                )  # fmt: skip
            self._processes.append(process)
            self._stats_urls.append(f"http://127.0.0.1:{stats_port}/stats;csv")
        expected = {
            f"gateway{i + 1}": "UP" if i < len(self.gateway_urls) else "DOWN" for i in range(GATEWAY_SLOTS)
        }
        await asyncio.gather(*(self._ready(i, expected) for i in range(len(self._processes))))

    async def _ready(self, index: int, expected: dict[str, str]) -> None:
        process, url = self._processes[index], self._stats_urls[index]
        log = self.log_dir / f"haproxy-{index}.log"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_TIMEOUT
        status: dict[str, str] = {}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            while loop.time() < deadline:
                if process.returncode is not None:
                    raise ClusterError(f"haproxy exited with {process.returncode}; see {log}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(url) as response:
                        status = server_status(await response.text())
                if all(status.get(name, "").split(" ")[0] == want for name, want in expected.items()):
                    return
                await asyncio.sleep(0.2)
        raise ClusterError(f"haproxy did not see the gateways {expected} (saw {status}); see {log}")

    async def stop(self) -> None:
        await asyncio.gather(*(terminate(p) for p in self._processes))
        self._processes.clear()
