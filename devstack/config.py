"""Where the local stack listens, what it talks to and how many of each process it runs.

``make run`` uses the defaults (the fixed ports of DESIGN.md, the machine's RabbitMQ, Redis and
PostgreSQL, a local moto S3 on 9000); ``python -m devstack --help`` and the fault suite (``chaos/``)
override them: free ports, a private broker and Redis, a database of its own, an S3 endpoint
behind a proxy it can cut.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

__all__ = ["DEFAULT_DATABASE_URL", "HAPROXY_AUTH_SOURCE", "ROOT", "RUN_DIR", "StackConfig", "free_port"]

ROOT = Path(__file__).resolve().parents[1]
RUN_DIR = ROOT / ".run"
# HAProxy connects to auth from this loopback address, the only peer whose X-Forwarded-For auth
# believes (AUTH_TRUSTED_PROXIES): a client calling auth's port directly comes from 127.0.0.1, so
# it is throttled as itself and cannot pose as another address; clients through HAProxy are
# throttled by their own address, not all as HAProxy's.
HAPROXY_AUTH_SOURCE = "127.0.0.2"
# The database of the auth service and the usage ledger (created when missing, migrated at start).
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/enterprise_chat"
S3_CREDENTIALS = {"S3_ACCESS_KEY_ID": "local-dev", "S3_SECRET_ACCESS_KEY": "local-dev"}


def free_port() -> int:
    """A TCP port nobody listens on right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True, slots=True)
class StackConfig:
    """Ports, dependencies and process counts (one gateway per gateway port, one worker per
    worker health port). ``None`` for a URL: the services' own default (the local service)."""

    run_dir: Path = RUN_DIR
    auth_port: int = 8001
    gateway_ports: tuple[int, ...] = (8101, 8102, 8103)
    worker_ports: tuple[int, ...] = (8201, 8202)
    simulator_port: int = 11435
    s3_port: int = 9000
    archiver_port: int = 8301
    ledger_port: int = 8501
    haproxy_port: int = 8080
    haproxy_tls_port: int = 8443
    haproxy_stats_port: int = 8404
    prometheus_port: int = 9090
    rabbitmq_url: str | None = None
    rabbitmq_management_url: str | None = None
    redis_url: str | None = None
    # Given to auth and the ledger only (the gateways verify tokens and keys without it).
    database_url: str = DEFAULT_DATABASE_URL
    # What the services use to reach S3; None = the moto server the stack starts on s3_port.
    s3_url: str | None = None
    # Extra simulator arguments (pace, answer length) and extra environment for every service.
    simulator_args: tuple[str, ...] = ()
    service_env: Mapping[str, str] = field(default_factory=dict)
    tls: bool = True
    prometheus: bool = True
    # Enable the management plugin of the machine's RabbitMQ (only for the default broker).
    enable_management: bool = True
    check_inter: str = "1s"
    # Concurrent streams it is sized for (DESIGN.md: 10,000): HAProxy processes, worker
    # concurrency. A stack beside another on free ports asks for less (one HAProxy process: a
    # second one's stats port, the first's + 1, may not be free).
    open_streams: int = 10_000

    @property
    def s3_endpoint(self) -> str:
        return self.s3_url or f"http://127.0.0.1:{self.s3_port}"

    @property
    def haproxy_url(self) -> str:
        return f"http://127.0.0.1:{self.haproxy_port}"

    def common_env(self) -> dict[str, str]:
        """Environment every service gets (besides its own port)."""
        env = {"S3_ENDPOINT_URL": self.s3_endpoint, **S3_CREDENTIALS}
        if self.rabbitmq_url:
            env["RABBITMQ_URL"] = self.rabbitmq_url
        if self.rabbitmq_management_url:
            env["RABBITMQ_MANAGEMENT_URL"] = self.rabbitmq_management_url
        if self.redis_url:
            env["REDIS_URL"] = self.redis_url
        return {**env, **self.service_env}

    @classmethod
    def on_free_ports(cls, *, gateways: int, workers: int, **overrides: object) -> StackConfig:
        """Every port free (picked now), so that the stack runs beside ``make run`` and tests."""
        ports = {
            name: free_port()
            for name in (
                "auth_port", "simulator_port", "s3_port", "archiver_port", "ledger_port",
                "haproxy_port", "haproxy_tls_port", "haproxy_stats_port", "prometheus_port",
            )
        }  # fmt: skip
        config = cls(
            gateway_ports=tuple(free_port() for _ in range(gateways)),
            worker_ports=tuple(free_port() for _ in range(workers)),
            **ports,  # type: ignore[arg-type]
        )
        return replace(config, **overrides)  # type: ignore[arg-type]
