"""``python -m devstack`` (``make run``): start the whole system locally and supervise it.

Starts, against the local RabbitMQ (management UI enabled) and Redis: a local S3 server (moto) on
9000, the Ollama simulator on 11435 (unless a real Ollama answers at ``OLLAMA_URLS``), the auth
service on 8001, three gateways on 8101-8103, two inference workers (health on 8201, 8202), the
archiver (8301), the usage ledger (8501), HAProxy (8080, TLS 8443, stats 8404) and Prometheus
(9090), with the local PostgreSQL (``DATABASE_URL``; the database is created when missing, and the
first platform admin with a generated password shown once in the banner). Signing keys, the
internal token and a self-signed certificate are generated under ``.run/`` and ``haproxy/ssl/`` on
first use. Ctrl-C stops everything it started.

Every port, the broker, Redis, PostgreSQL and S3 addresses and the number of gateways and workers
can be changed (``--help``; ``--free-ports`` runs a second stack beside the first). Sized for
``OPEN_STREAMS`` concurrent streams: the open-file limit is raised (to the hard limit, or 65536
where allowed), HAProxy's ``MAXCONN`` is what that limit lets one process hold, and against the
simulator the workers take ``WORKER_CONCURRENCY`` generations each and the simulator queues that
many. ``HAPROXY_MAXCONN``, ``WORKER_CONCURRENCY`` and ``SIMULATOR_MAX_QUEUE`` override them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from devstack.config import HAPROXY_AUTH_SOURCE, ROOT, StackConfig
from devstack.haproxy import GATEWAY_SLOTS
from devstack.limits import haproxy_processes, raise_open_files_limit
from devstack.stack import ADMIN_USERNAME, OPEN_STREAMS, RunningStack, start_stack
from devstack.supervisor import Supervisor

__all__ = ["HAPROXY_AUTH_SOURCE", "parse_config"]

_PORTS = (
    "auth_port", "simulator_port", "s3_port", "archiver_port", "ledger_port", "haproxy_port",
    "haproxy_tls_port", "haproxy_stats_port", "prometheus_port",
)  # fmt: skip


def _ports(text: str) -> tuple[int, ...]:
    return tuple(int(item) for item in text.split(",") if item.strip())


def parse_config(argv: Sequence[str] | None = None) -> StackConfig:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    default = StackConfig()
    add("--free-ports", action="store_true", help="every port free (picked at start)")
    add("--gateways", type=int, default=None, help=f"gateway processes (1-{GATEWAY_SLOTS}; default 3)")
    add("--workers", type=int, default=None, help="worker processes (default 2)")
    add("--gateway-ports", type=_ports, default=None, help="comma-separated (default 8101,8102,8103)")
    add("--worker-ports", type=_ports, default=None, help="workers' health ports (default 8201,8202)")
    for name in _PORTS:
        add(f"--{name.replace('_', '-')}", type=int, default=None, help=f"default {getattr(default, name)}")
    add("--rabbitmq-url", default=None, help="default: RABBITMQ_URL or the local broker")
    add("--rabbitmq-management-url", default=None, help="its management API (gateway backlog)")
    add("--redis-url", default=None, help="default: REDIS_URL or the local Redis")
    add(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        help=f"auth's and the ledger's PostgreSQL database (default: DATABASE_URL or {default.database_url})",
    )
    add("--s3-url", default=None, help="S3 endpoint the services use (default: the local moto)")
    add("--run-dir", type=Path, default=None, help=f"keys and logs (default {default.run_dir})")
    add("--no-tls", action="store_true", help="no HAProxy TLS listener")
    add("--no-prometheus", action="store_true")
    args = parser.parse_args(argv)
    gateways = args.gateways or (
        len(args.gateway_ports) if args.gateway_ports else len(default.gateway_ports)
    )
    workers = args.workers or (len(args.worker_ports) if args.worker_ports else len(default.worker_ports))
    if not 1 <= gateways <= GATEWAY_SLOTS or workers < 1:
        parser.error(f"--gateways must be 1-{GATEWAY_SLOTS} (haproxy.cfg's slots), --workers >= 1")
    if args.free_ports:
        config = StackConfig.on_free_ports(gateways=gateways, workers=workers)
    else:
        config = replace(
            default,
            gateway_ports=args.gateway_ports or tuple(8101 + i for i in range(gateways)),
            worker_ports=args.worker_ports or tuple(8201 + i for i in range(workers)),
        )
    overrides: dict[str, object] = {name: getattr(args, name) for name in _PORTS if getattr(args, name)}
    for name in ("rabbitmq_url", "rabbitmq_management_url", "redis_url", "database_url", "s3_url", "run_dir"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if args.no_tls:
        overrides["tls"] = False
    if args.no_prometheus:
        overrides["prometheus"] = False
    return replace(config, **overrides)  # type: ignore[arg-type]


def admin_note(password: str | None) -> str:
    if password is None:
        return "  platform admin      exists (another: python -m auth create-admin --help)"
    return (
        f"  platform admin      {ADMIN_USERNAME} / {password}\n"
        "                      (shown once: change it with POST /me/password; more admins:\n"
        "                      python -m auth create-admin --username ... --email ... --organization ...)"
    )


def banner(stack: RunningStack) -> str:
    c = stack.config
    base = c.haproxy_url.replace("127.0.0.1", "localhost")
    tls = f"   (TLS https://localhost:{c.haproxy_tls_port}, self-signed)" if c.tls else ""
    management = c.rabbitmq_management_url or "http://localhost:15672"
    note = " (simulator: no Ollama answered)" if stack.simulated else ""
    return f"""
Enterprise chat is running.
  chat page (browser) {base}/
{admin_note(stack.admin_password)}
  chat API (HAProxy)  {base}{tls}
  auth                http://localhost:{c.auth_port}   (also routed through {base})
  gateways            {", ".join(f"http://localhost:{p}" for p in c.gateway_ports)}
  HAProxy stats       http://localhost:{c.haproxy_stats_port}/stats
  RabbitMQ UI         {management} (guest/guest, local only)
  Prometheus          {f"http://localhost:{c.prometheus_port}" if c.prometheus else "off"}
  S3 (local, moto)    http://localhost:{c.s3_port}   bucket enterprise-chat-archive
  model backend       {stack.ollama_urls}{note}
  logs                {c.run_dir / "logs"}

Try it (paste):
  curl -s {base}/register -H 'content-type: application/json' \\
  -d '{{"username":"testuser","password":"testpass123","email":"test@company.com","organization":"TestOrg"}}'
  TOKEN=$(curl -s {base}/login -H 'content-type: application/json' \\
    -d '{{"username":"testuser","password":"testpass123"}}' \\
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  curl -N {base}/chat -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' \\
    -d '{{"session_id":"session123","prompt":"שלום, מה שלומך?"}}'
  # An API key for tools that want a static key (OpenAI clients: base URL {base}/v1):
  curl -s {base}/me/api-keys -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' \\
    -d '{{"name":"my tool"}}'

Ctrl-C stops everything.
"""


def limits_note(open_files: int, sizes: dict[str, str]) -> str:
    maxconn = int(sizes["HAPROXY_MAXCONN"])
    processes = haproxy_processes(OPEN_STREAMS, maxconn)
    note = f"Limits: {open_files} open files per process; HAProxy maxconn {maxconn}"
    if processes > 1:
        note += (
            f" in each of {processes} processes sharing its ports (the open-file limit is too low for one)"
        )
    if "WORKER_CONCURRENCY" in sizes:
        note += (
            f"; {sizes['WORKER_CONCURRENCY']} generations per worker, simulator queue "
            f"{sizes['SIMULATOR_MAX_QUEUE']}"
        )
    return note + "."


async def main(config: StackConfig) -> None:
    open_files = raise_open_files_limit()
    requested = [u for u in os.environ.get("OLLAMA_URLS", "http://127.0.0.1:11434").split(",") if u.strip()]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Supervisor(config.run_dir / "logs", ROOT) as supervisor:
        print("starting S3, the model backend, auth, gateways and workers ...", flush=True)
        stack = await start_stack(supervisor, config, open_files=open_files, ollama=requested)
        print(banner(stack), flush=True)
        print(limits_note(open_files, stack.sizes), flush=True)
        await stop.wait()
        print("\nstopping ...", flush=True)
    print("stopped; nothing left running.")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(parse_config()))
