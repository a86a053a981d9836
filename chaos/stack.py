"""The stack under test: devstack's processes on free ports, against a private RabbitMQ node,
a private Redis, and a PostgreSQL database of its own (on the server at ``POSTGRES_URL``, default
the local one; created and migrated at the start, dropped at the end), with S3 behind a TCP proxy
the suite can cut (moto keeps its objects meanwhile).

Settings that make a short run meaningful: a simulator pace at which a stream lasts about a second
(faults land mid-stream), a rate limit the clients do not hit, fast archive retries, fast health
checks. Everything else is the services' defaults.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from auth.database import DATABASE_UNAVAILABLE
from chaos.services import PrivateRabbit, PrivateRedis
from devstack.config import ROOT, StackConfig
from devstack.database import database_named, drop_database
from devstack.limits import raise_open_files_limit
from devstack.stack import RunningStack, start_stack
from devstack.supervisor import Supervisor
from devstack.tcp_proxy import TcpProxy

__all__ = ["ChaosStack", "chaos_stack"]

SERVICE_ENV = {
    "LOG_JSON": "true",
    "LOG_LEVEL": "info",
    "RATE_LIMIT_PER_MINUTE": "100000",
    "AUTH_BCRYPT_ROUNDS": "4",  # logins are load here, not what is measured
    "AUTH_REGISTER_MAX_PER_IP": "100000",
    "AUTH_LOGIN_MAX_FAILURES_PER_IP": "100000",
    "ARCHIVE_RETRY_DELAY_SECONDS": "1",
    "ARCHIVE_RETRY_DELAY_MAX_SECONDS": "4",
    "SHUTDOWN_GRACE_SECONDS": "2",
}
POSTGRES_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
DROP_FAILURES: tuple[type[Exception], ...] = (*DATABASE_UNAVAILABLE, asyncpg.PostgresError)
SIMULATOR_ARGS = ("--ttft-ms", "100", "--tokens-per-second", "40", "--answer-tokens", "40")


@dataclass(slots=True)
class ChaosStack:
    supervisor: Supervisor
    rabbit: PrivateRabbit
    redis: PrivateRedis
    s3_proxy: TcpProxy
    running: RunningStack
    base: Path

    @property
    def url(self) -> str:
        return self.running.config.haproxy_url

    @property
    def logs(self) -> Path:
        return self.base / "logs"


async def _drop(database_url: str) -> None:
    """Drop the run's database; an unreachable server is reported, not raised over the run's
    own outcome."""
    try:
        await drop_database(database_url)
    except DROP_FAILURES as exc:
        print(f"chaos: database {database_url} not dropped: {exc!r}", file=sys.stderr)


@contextlib.asynccontextmanager
async def chaos_stack(
    *, gateways: int = 3, workers: int = 2, keep: bool = False
) -> AsyncIterator[ChaosStack]:
    """Start everything; afterwards stop it, drop its database and remove its directory (unless
    ``keep``, or the run failed: then the logs stay for reading)."""
    base = Path(tempfile.mkdtemp(prefix="chaos-"))
    rabbit, redis = PrivateRabbit(base / "rabbitmq"), PrivateRedis()
    server = os.environ.get("POSTGRES_URL", POSTGRES_SERVER)
    database_url = database_named(server, f"chaos_{secrets.token_hex(6)}")
    failed = True
    s3_proxy: TcpProxy | None = None
    open_files = raise_open_files_limit()
    try:
        async with Supervisor(base / "logs", ROOT) as supervisor:
            try:
                await rabbit.start(supervisor)
                await redis.start(supervisor)
                config = StackConfig.on_free_ports(gateways=gateways, workers=workers, run_dir=base)
                s3_proxy = TcpProxy("127.0.0.1", config.s3_port)
                await s3_proxy.start()
                config = StackConfig.on_free_ports(
                    gateways=gateways,
                    workers=workers,
                    run_dir=base,
                    s3_port=config.s3_port,
                    rabbitmq_url=rabbit.url,
                    rabbitmq_management_url=rabbit.management_url,
                    redis_url=redis.url,
                    database_url=database_url,
                    s3_url=f"http://{s3_proxy.address}",
                    simulator_args=SIMULATOR_ARGS,
                    service_env=SERVICE_ENV,
                    tls=False,
                    prometheus=False,
                    enable_management=False,
                    check_inter="500ms",
                    open_streams=1000,
                )
                running = await start_stack(supervisor, config, open_files=open_files, ollama=[])
                yield ChaosStack(supervisor, rabbit, redis, s3_proxy, running, base)
                failed = False
            finally:
                if s3_proxy is not None:
                    await s3_proxy.close()
    finally:  # after the supervisor stopped every process: nobody is connected any more
        await _drop(database_url)
    if keep or failed:
        print(f"chaos: logs kept in {base / 'logs'}", file=sys.stderr)
        shutil.rmtree(base / "rabbitmq" / "mnesia", ignore_errors=True)
    else:
        shutil.rmtree(base, ignore_errors=True)
