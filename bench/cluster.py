"""The processes a bench run starts: one simulator, N workers, N gateways, in their own namespace.

Every process logs to a file in ``log_dir``. ``stop()`` always ends them (SIGTERM, then SIGKILL
after a grace period); ``cleanup_namespace`` removes the run's queues, exchanges and Redis keys so
a bench never disturbs, nor leaves anything in, a system sharing the broker and Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika
import aiohttp
from redis.asyncio import Redis

from broker.topology import Topology
from devstack.config import free_port

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 30.0
STOP_GRACE = 10.0


class ClusterError(RuntimeError):
    """A process did not start or become ready; its log file says why."""


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    namespace: str
    rabbitmq_url: str
    redis_url: str
    jwt_public_pem: str
    gateways: int = 2
    workers: int = 2
    worker_concurrency: int = 256
    ttft_ms: float = 20.0
    tokens_per_second: float = 0.0
    answer_tokens: int = 24
    simulator_max_queue: int = 4096
    chat_deadline_seconds: float = 60.0
    log_level: str = "warning"

    @property
    def key_prefix(self) -> str:
        return f"{self.namespace}:"


@dataclass(slots=True)
class _Proc:
    role: str
    name: str
    process: asyncio.subprocess.Process
    log: Path
    ready_url: str


@dataclass(slots=True)
class Cluster:
    config: ClusterConfig
    log_dir: Path
    simulator_url: str = ""
    gateway_urls: list[str] = field(default_factory=list)
    _procs: list[_Proc] = field(default_factory=list)

    def pids(self) -> dict[str, list[int]]:
        """Role -> pids (``simulator``, ``worker``, ``gateway``)."""
        roles: dict[str, list[int]] = {}
        for proc in self._procs:
            roles.setdefault(proc.role, []).append(proc.process.pid)
        return roles

    def _env(self, **extra: str) -> dict[str, str]:
        c = self.config
        return {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "ENVIRONMENT": "development",
            "LOG_LEVEL": c.log_level,
            "LOG_JSON": "false",
            "RABBITMQ_URL": c.rabbitmq_url,
            "REDIS_URL": c.redis_url,
            "BROKER_PREFIX": c.namespace,
            "REDIS_KEY_PREFIX": c.key_prefix,
            **extra,
        }

    async def _spawn(self, role: str, name: str, args: list[str], env: dict[str, str], ready: str) -> None:
        log = self.log_dir / f"{name}.log"
        with log.open("wb") as out:  # the child keeps its own descriptor
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", *args, env=env, cwd=ROOT, stdin=asyncio.subprocess.DEVNULL,
                stdout=out, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
        self._procs.append(_Proc(role, name, process, log, ready))

    async def start(self) -> None:
        """Start the simulator, then workers and gateways; return when every one is ready."""
        c = self.config
        port = free_port()
        self.simulator_url = f"http://127.0.0.1:{port}"
        sim_args = [
            "inference_worker.simulator", "--port", str(port), "--ttft-ms", str(c.ttft_ms),
            "--tokens-per-second", str(c.tokens_per_second), "--answer-tokens", str(c.answer_tokens),
            "--max-queue", str(c.simulator_max_queue),
        ]  # fmt: skip
        await self._spawn("simulator", "simulator", sim_args, self._env(), self.simulator_url + "/")
        await self._wait_ready()
        for i in range(c.workers):
            port = free_port()
            env = self._env(
                OLLAMA_URLS=self.simulator_url,
                WORKER_CONCURRENCY=str(c.worker_concurrency),
                WORKER_HTTP_PORT=str(port),
                SHUTDOWN_GRACE_SECONDS="2",
                SERVICE_NAME=f"bench-worker-{i}",
            )
            await self._spawn(
                "worker", f"worker-{i}", ["inference_worker"], env, f"http://127.0.0.1:{port}/ready"
            )
        for i in range(c.gateways):
            port = free_port()
            env = self._env(
                JWT_PUBLIC_KEY=c.jwt_public_pem,
                GATEWAY_HOST="127.0.0.1",
                GATEWAY_PORT=str(port),
                INSTANCE_ID=f"bench-gateway-{i}",
                CHAT_DEADLINE_SECONDS=f"{c.chat_deadline_seconds:g}",
            )
            await self._spawn("gateway", f"gateway-{i}", ["gateway"], env, f"http://127.0.0.1:{port}/ready")
            self.gateway_urls.append(f"http://127.0.0.1:{port}")
        await self._wait_ready()

    async def _wait_ready(self) -> None:
        timeout = aiohttp.ClientTimeout(total=2)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            await asyncio.gather(*(self._ready(http, proc) for proc in self._procs))

    async def _ready(self, http: aiohttp.ClientSession, proc: _Proc) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_TIMEOUT
        while loop.time() < deadline:
            if proc.process.returncode is not None:
                raise ClusterError(f"{proc.name} exited with {proc.process.returncode}; see {proc.log}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.get(proc.ready_url) as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.1)
        raise ClusterError(f"{proc.name} was not ready within {READY_TIMEOUT:.0f}s; see {proc.log}")

    async def stop(self) -> None:
        """Gateways and workers first (they drain), then the simulator; SIGKILL what lingers."""
        front = [p for p in self._procs if p.role != "simulator"]
        back = [p for p in self._procs if p.role == "simulator"]
        for group in (front, back):
            await asyncio.gather(*(terminate(p.process) for p in group))
        self._procs.clear()


async def terminate(process: asyncio.subprocess.Process) -> None:
    """SIGTERM, then SIGKILL after ``STOP_GRACE`` seconds."""
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), STOP_GRACE)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


async def cleanup_namespace(config: ClusterConfig) -> list[str]:
    """Delete the run's queues, exchanges and Redis keys; returns what could not be cleaned."""
    problems: list[str] = []
    try:
        connection = await aio_pika.connect(config.rabbitmq_url, timeout=10)
        async with connection:
            await Topology(config.namespace).delete(await connection.channel())
    except Exception as exc:  # report and go on to Redis: clean-up must not hide the results
        problems.append(f"rabbitmq: {exc!r}")
    redis = Redis.from_url(config.redis_url)
    try:
        batch: list[bytes] = []
        async for key in redis.scan_iter(match=f"{config.key_prefix}*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                await redis.unlink(*batch)
                batch.clear()
        if batch:
            await redis.unlink(*batch)
    except Exception as exc:
        problems.append(f"redis: {exc!r}")
    finally:
        await redis.aclose()
    return problems
