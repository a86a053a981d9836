"""Start the whole system under a :class:`Supervisor`, as ``make run`` does, from a StackConfig.

The order matters: S3 and the model backend first, then the database (created when missing,
migrated), then auth, then workers, gateways, the archiver and the usage ledger (in parallel),
then HAProxy once a gateway is up, then Prometheus. A database without a platform admin gets one
(``admin``, a generated password the caller shows once).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import sys
from dataclasses import dataclass

import aiohttp

from devstack.config import HAPROXY_AUTH_SOURCE, ROOT, StackConfig
from devstack.database import prepare_database
from devstack.haproxy import haproxy_env
from devstack.keys import ensure_certificate, ensure_internal_token, ensure_signing_key
from devstack.limits import haproxy_maxconn, haproxy_processes
from devstack.supervisor import ProcessSpec, Supervisor

__all__ = ["ADMIN_USERNAME", "OPEN_STREAMS", "RunningStack", "capacity", "start_stack"]

# Concurrent streams the local run is sized for (DESIGN.md: 10,000 open streams held at once).
OPEN_STREAMS = 10_000
HAPROXY_MAXCONN = 20_000
# The first platform admin, created by auth at start-up when the database has none.
ADMIN_USERNAME = "admin"
ADMIN_BOOTSTRAP = {
    "AUTH_BOOTSTRAP_ADMIN_USERNAME": ADMIN_USERNAME,
    "AUTH_BOOTSTRAP_ADMIN_EMAIL": "admin@example.com",
    "AUTH_BOOTSTRAP_ADMIN_ORGANIZATION": "Platform",
}


@dataclass(frozen=True, slots=True)
class RunningStack:
    config: StackConfig
    ollama_urls: str
    simulated: bool
    sizes: dict[str, str]
    # The password of the platform admin created at this start (None: the database had one).
    admin_password: str | None = None


async def enable_rabbitmq_management() -> None:
    """The management UI on 15672 (backlog inspection); idempotent, works offline."""
    if shutil.which("rabbitmq-plugins") is None:
        return
    process = await asyncio.create_subprocess_exec(
        "rabbitmq-plugins", "enable", "--quiet", "rabbitmq_management",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    await process.wait()


async def answering_ollama(urls: list[str]) -> list[str]:
    live: list[str] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        for url in urls:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(f"{url.rstrip('/')}/api/version") as response:
                    if response.status == 200:
                        live.append(url.rstrip("/"))
    return live


def capacity(
    open_files: int, workers: int, *, simulated: bool, streams: int = OPEN_STREAMS
) -> dict[str, str]:
    """HAProxy's MAXCONN, and against the simulator the workers' concurrency and its queue."""
    env = os.environ
    sizes = {"HAPROXY_MAXCONN": env.get("HAPROXY_MAXCONN", str(haproxy_maxconn(open_files, HAPROXY_MAXCONN)))}
    if simulated:  # a real Ollama node bounds its own queue: keep the worker's default there
        per_worker = -(-streams // max(1, workers)) + 1000
        sizes["WORKER_CONCURRENCY"] = env.get("WORKER_CONCURRENCY", str(per_worker))
        sizes["SIMULATOR_MAX_QUEUE"] = env.get("SIMULATOR_MAX_QUEUE", str(per_worker * workers))
    return sizes


async def start_stack(
    supervisor: Supervisor, config: StackConfig, *, open_files: int, ollama: list[str]
) -> RunningStack:
    """Start every process of the stack; returns once each is ready (HAProxy sees a gateway)."""
    python = sys.executable
    private_key, public_key = ensure_signing_key(config.run_dir / "keys")
    common = {
        "ENVIRONMENT": os.environ.get("ENVIRONMENT", "development"),
        "PYTHONUNBUFFERED": "1",
        **config.common_env(),
    }
    ssl_dir = str(ensure_certificate(ROOT / "haproxy" / "ssl")) if config.tls else None
    if config.enable_management and config.rabbitmq_url is None:
        await enable_rabbitmq_management()
    s3 = (python, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(config.s3_port))
    await supervisor.start(ProcessSpec("s3", s3, common, f"http://127.0.0.1:{config.s3_port}/"))
    live = await answering_ollama(ollama)
    simulated = not live
    sizes = capacity(open_files, len(config.worker_ports), simulated=simulated, streams=config.open_streams)
    if simulated:
        simulator = (
            python, "-m", "inference_worker.simulator", "--port", str(config.simulator_port),
            "--max-queue", sizes["SIMULATOR_MAX_QUEUE"], *config.simulator_args,
        )  # fmt: skip
        ready = f"http://127.0.0.1:{config.simulator_port}/api/version"
        await supervisor.start(ProcessSpec("simulator", simulator, common, ready))
        live = [f"http://127.0.0.1:{config.simulator_port}"]
    ollama_urls = ",".join(live)
    admin_password = secrets.token_urlsafe(15) if await prepare_database(config.database_url) else None
    identity = {
        "DATABASE_URL": config.database_url,
        "INTERNAL_API_TOKEN": ensure_internal_token(config.run_dir / "keys"),
    }
    auth_env = {
        **common,
        **identity,
        "AUTH_PORT": str(config.auth_port),
        "AUTH_HOST": "127.0.0.1",
        "AUTH_SIGNING_KEY_FILE": str(private_key),
        "AUTH_TRUSTED_PROXIES": HAPROXY_AUTH_SOURCE,
    }
    if admin_password is not None:  # created at start-up, shown once by the caller
        auth_env |= {**ADMIN_BOOTSTRAP, "AUTH_BOOTSTRAP_ADMIN_PASSWORD": admin_password}
    await supervisor.start(
        ProcessSpec("auth", (python, "-m", "auth"), auth_env, f"http://127.0.0.1:{config.auth_port}/ready")
    )
    worker_env = {**common, "OLLAMA_URLS": ollama_urls}
    if "WORKER_CONCURRENCY" in sizes:
        worker_env["WORKER_CONCURRENCY"] = sizes["WORKER_CONCURRENCY"]
    specs = [
        ProcessSpec(
            f"worker-{i + 1}",
            (python, "-m", "inference_worker"),
            {**worker_env, "WORKER_HTTP_PORT": str(port)},
            f"http://127.0.0.1:{port}/ready",
        )
        for i, port in enumerate(config.worker_ports)
    ] + [
        ProcessSpec(
            f"gateway-{i + 1}",
            (python, "-m", "gateway"),
            {
                **common,
                "GATEWAY_PORT": str(port),
                "INSTANCE_ID": f"gateway-{i + 1}",
                "JWT_PUBLIC_KEY_FILE": str(public_key),
                "AUTH_URL": f"http://127.0.0.1:{config.auth_port}",
                "INTERNAL_API_TOKEN": identity["INTERNAL_API_TOKEN"],
            },
            f"http://127.0.0.1:{port}/ready",
        )
        for i, port in enumerate(config.gateway_ports)
    ]
    specs.append(
        ProcessSpec(
            "archiver",
            (python, "-m", "archiver"),
            {**common, "ARCHIVER_HTTP_PORT": str(config.archiver_port)},
            f"http://127.0.0.1:{config.archiver_port}/ready",
        )
    )
    specs.append(
        ProcessSpec(
            "ledger",
            (python, "-m", "auth.ledger"),
            {**common, **identity, "LEDGER_HTTP_PORT": str(config.ledger_port)},
            f"http://127.0.0.1:{config.ledger_port}/ready",
        )
    )
    await asyncio.gather(*(supervisor.start(spec) for spec in specs))
    await _start_haproxy(supervisor, config, ssl_dir, int(sizes["HAPROXY_MAXCONN"]))
    prometheus = shutil.which("prometheus") if config.prometheus else None
    if prometheus:
        argv = (
            prometheus,
            f"--config.file={ROOT / 'monitoring' / 'prometheus.yml'}",
            f"--storage.tsdb.path={config.run_dir / 'prometheus'}",
            f"--web.listen-address=127.0.0.1:{config.prometheus_port}",
        )
        ready = f"http://127.0.0.1:{config.prometheus_port}/-/ready"
        await supervisor.start(ProcessSpec("prometheus", argv, {}, ready))
    return RunningStack(config, ollama_urls, simulated, sizes, admin_password)


async def _start_haproxy(
    supervisor: Supervisor, config: StackConfig, ssl_dir: str | None, maxconn: int
) -> None:
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    for i in range(haproxy_processes(config.open_streams, maxconn)):
        # More than one only where the open-file limit is too low for one to hold OPEN_STREAMS:
        # the same ports (SO_REUSEPORT), each its own stats port (8404, 8405 ...).
        stats_port = config.haproxy_stats_port + i
        env = haproxy_env(config, ssl_dir=ssl_dir, maxconn=maxconn, stats_port=stats_port)
        await supervisor.start(
            ProcessSpec(
                "haproxy" if i == 0 else f"haproxy-{i + 1}",
                (haproxy, "-db", "-f", str(ROOT / "haproxy" / "haproxy.cfg")),
                env,
                # The first is alone on the port while it starts: its /ready is its own.
                f"{config.haproxy_url}/ready" if i == 0 else f"http://127.0.0.1:{stats_port}/stats",
            )
        )
