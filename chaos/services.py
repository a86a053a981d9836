"""A private RabbitMQ node and a private Redis for the fault suite, on free ports.

The machine's shared broker (5672) and Redis (6379, the cluster on 7000-7005) serve other tests
at the same time, so the faults are injected only into these: the suite starts them, stops and
restarts them, and removes their data directory afterwards. Both run under the stack's
:class:`~devstack.supervisor.Supervisor` (one place that owns processes).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import aio_pika
from redis.asyncio import Redis

from devstack.config import free_port
from devstack.supervisor import ProcessSpec, Supervisor

__all__ = ["PrivateRabbit", "PrivateRedis", "ServiceError"]

RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")  # the Debian scripts, without the su-to-rabbitmq wrapper
START_TIMEOUT = 90.0


class ServiceError(RuntimeError):
    """A private service did not start; its log says why."""


@dataclass(slots=True)
class PrivateRabbit:
    """One RabbitMQ node ``chaos-<random>@localhost`` with its own ports, data, cookie and logs."""

    base: Path
    node: str = ""
    port: int = 0
    management_port: int = 0

    def __post_init__(self) -> None:
        self.node = self.node or f"chaos-{secrets.token_hex(4)}@localhost"
        self.port = self.port or free_port()
        self.management_port = self.management_port or free_port()

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def management_url(self) -> str:
        return f"http://127.0.0.1:{self.management_port}"

    def env(self) -> dict[str, str]:
        return {
            "HOME": str(self.base),  # its own Erlang cookie
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_LOGS": "-",
            "RABBITMQ_PID_FILE": str(self.base / "node.pid"),
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.base / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            "RABBITMQ_CONF_ENV_FILE": str(self.base / "rabbitmq-env.conf"),  # not the machine's
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    async def start(self, supervisor: Supervisor) -> None:
        for directory in ("mnesia", "log"):
            (self.base / directory).mkdir(parents=True, exist_ok=True)
        (self.base / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = {self.port}\n"
            f"management.tcp.port = {self.management_port}\n"
            "management.tcp.ip = 127.0.0.1\n"
            "collect_statistics_interval = 1000\n"
        )
        (self.base / "advanced.config").write_text("[].\n")
        (self.base / "enabled_plugins").write_text("[rabbitmq_management].\n")
        (self.base / "rabbitmq-env.conf").write_text("")
        spec = ProcessSpec("rabbitmq", (str(RABBIT_BIN / "rabbitmq-server"),), self.env())
        await supervisor.start(spec)
        await self.wait_ready()

    async def ctl(self, *args: str) -> None:
        """``rabbitmqctl -n <node> <args>`` (stop_app, start_app ...)."""
        process = await asyncio.create_subprocess_exec(
            str(RABBIT_BIN / "rabbitmqctl"), "-n", self.node, *args,
            env={**os.environ, **self.env()}, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        output, _ = await process.communicate()
        if process.returncode != 0:
            raise ServiceError(f"rabbitmqctl {' '.join(args)}: {output.decode(errors='replace')[-500:]}")

    async def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Until an AMQP connection opens (the node booted and its listener is up)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                connection = await aio_pika.connect(self.url, timeout=2)
            except Exception as exc:  # any failure means "not yet", until the deadline
                if time.monotonic() > deadline:
                    raise ServiceError(
                        f"RabbitMQ {self.node} not ready after {timeout:.0f}s: {exc!r}"
                    ) from exc
                await asyncio.sleep(0.3)
                continue
            await connection.close()
            return

    def remove(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)


@dataclass(slots=True)
class PrivateRedis:
    """A ``redis-server`` that keeps nothing (no RDB, no AOF): a restart is an empty Redis."""

    port: int = 0

    def __post_init__(self) -> None:
        self.port = self.port or free_port()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self, supervisor: Supervisor) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        argv = (binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no")
        await supervisor.start(ProcessSpec("redis", argv))
        await self.wait_ready()

    async def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        redis = Redis.from_url(self.url, socket_timeout=1)
        try:
            while True:
                try:
                    await redis.ping()
                    return
                except Exception as exc:  # not listening yet
                    if time.monotonic() > deadline:
                        raise ServiceError(f"Redis on {self.port} not ready: {exc!r}") from exc
                    await asyncio.sleep(0.1)
        finally:
            await redis.aclose()
