"""``python -m devstack`` (``make run``): start the whole system locally and supervise it.

Starts, against the local RabbitMQ (management UI enabled) and Redis: a local S3 server (moto) on
9000, the Ollama simulator on 11435 (unless a real Ollama answers at ``OLLAMA_URLS``), the auth
service on 8001, three gateways on 8101-8103, two inference workers (health on 8201, 8202), the
archiver (8301), the usage ledger (8501), HAProxy (8080, TLS 8443, stats 8404) and Prometheus
(9090), with the local PostgreSQL (``DATABASE_URL``; the database is created when missing, and the
first platform admin with a generated password shown once in the banner). Signing keys and a
self-signed certificate are generated under ``.run/`` and ``haproxy/ssl/`` on first use.
Ctrl-C stops everything it started.

Sized for ``OPEN_STREAMS`` concurrent streams: the open-file limit is raised (to the hard limit, or
65536 where allowed), HAProxy's ``MAXCONN`` is what that limit lets one process hold, and against
the simulator the workers take ``WORKER_CONCURRENCY`` generations each and the simulator queues
that many. ``HAPROXY_MAXCONN``, ``WORKER_CONCURRENCY`` and ``SIMULATOR_MAX_QUEUE`` override them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import sys
from pathlib import Path

import aiohttp
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from devstack.limits import haproxy_maxconn, haproxy_processes, raise_open_files_limit
from devstack.supervisor import ProcessSpec, Supervisor

ROOT = Path(__file__).resolve().parents[1]
RUN_DIR = ROOT / ".run"
GATEWAY_PORTS = (8101, 8102, 8103)
WORKER_PORTS = (8201, 8202)
AUTH_PORT = 8001
SIMULATOR_PORT = 11435
S3_PORT = 9000
ARCHIVER_PORT = 8301
LEDGER_PORT = 8501
DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/enterprise_chat"
ADMIN_USERNAME = "admin"
HAPROXY_PORT, HAPROXY_TLS_PORT, HAPROXY_STATS_PORT = 8080, 8443, 8404
PROMETHEUS_PORT = 9090
# Concurrent streams the local run is sized for (DESIGN.md: 10,000 open streams held at once).
OPEN_STREAMS = 10_000
HAPROXY_MAXCONN = 20_000
# HAProxy connects to auth from this loopback address, the only peer whose X-Forwarded-For auth
# believes (AUTH_TRUSTED_PROXIES): a client calling auth's 8001 directly comes from 127.0.0.1, so
# it is throttled as itself and cannot pose as another address; clients through HAProxy are
# throttled by their own address, not all as HAProxy's.
HAPROXY_AUTH_SOURCE = "127.0.0.2"
S3_ENV = {
    "S3_ENDPOINT_URL": f"http://127.0.0.1:{S3_PORT}",
    "S3_ACCESS_KEY_ID": "local-dev",
    "S3_SECRET_ACCESS_KEY": "local-dev",
}


def ensure_signing_key(directory: Path) -> tuple[Path, Path]:
    """An Ed25519 key pair for the auth service, generated once and kept private (0600)."""
    directory.mkdir(parents=True, exist_ok=True)
    private_path, public_path = directory / "signing.pem", directory / "signing.pub.pem"
    if not private_path.exists():
        key = ed25519.Ed25519PrivateKey.generate()
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
        public_path.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    return private_path, public_path


def ensure_certificate(directory: Path) -> Path:
    """A self-signed certificate for HAProxy's TLS port (cert and key in one PEM, private)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    if any(directory.glob("*.pem")):
        return directory
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(directory / "local.pem", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    return directory


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


def ensure_internal_token(directory: Path) -> str:
    """The secret gateways show the auth service to verify API keys, generated once (0600)."""
    path = directory / "internal_token"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(32))
    return path.read_text().strip()


async def prepare_database(url: str) -> bool:
    """Create the database when missing and migrate it; True when it has no platform admin yet."""
    import asyncpg

    from auth.database import ensure_database, migrate

    if await ensure_database(url):
        print(f"created database {url.rsplit('/', 1)[1]}", flush=True)
    await migrate(url)
    conn = await asyncpg.connect(url)
    try:
        return not await conn.fetchval("SELECT 1 FROM users WHERE role = 'admin' LIMIT 1")
    finally:
        await conn.close()


def admin_note(password: str | None) -> str:
    if password is None:
        return "  platform admin      exists (another: python -m auth create-admin --help)"
    return (
        f"  platform admin      {ADMIN_USERNAME} / {password}\n"
        "                      (shown once: change it with POST /me/password; more admins:\n"
        "                      python -m auth create-admin --username ... --email ... --organization ...)"
    )


def banner(ollama: str, simulated: bool, admin: str = "") -> str:
    base = f"http://localhost:{HAPROXY_PORT}"
    return f"""
Enterprise chat is running.
  chat page (browser) {base}/
{admin}
  chat API (HAProxy)  {base}   (TLS https://localhost:{HAPROXY_TLS_PORT}, self-signed)
  auth                http://localhost:{AUTH_PORT}   (also routed through {base})
  gateways            {", ".join(f"http://localhost:{p}" for p in GATEWAY_PORTS)}
  HAProxy stats       http://localhost:{HAPROXY_STATS_PORT}/stats
  RabbitMQ UI         http://localhost:15672 (guest/guest, local only)
  Prometheus          http://localhost:{PROMETHEUS_PORT}
  S3 (local, moto)    http://localhost:{S3_PORT}   bucket enterprise-chat-archive
  model backend       {ollama}{" (simulator: no Ollama answered)" if simulated else ""}
  logs                {RUN_DIR / "logs"}

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


def capacity(open_files: int, *, simulated: bool) -> dict[str, str]:
    """HAProxy's MAXCONN, and against the simulator the workers' concurrency and its queue."""
    env = os.environ
    sizes = {"HAPROXY_MAXCONN": env.get("HAPROXY_MAXCONN", str(haproxy_maxconn(open_files, HAPROXY_MAXCONN)))}
    if simulated:  # a real Ollama node bounds its own queue: keep the worker's default there
        per_worker = -(-OPEN_STREAMS // len(WORKER_PORTS)) + 1000
        sizes["WORKER_CONCURRENCY"] = env.get("WORKER_CONCURRENCY", str(per_worker))
        sizes["SIMULATOR_MAX_QUEUE"] = env.get("SIMULATOR_MAX_QUEUE", str(per_worker * len(WORKER_PORTS)))
    return sizes


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


async def main() -> None:
    python = sys.executable
    open_files = raise_open_files_limit()
    private_key, public_key = ensure_signing_key(RUN_DIR / "keys")
    requested = [u for u in os.environ.get("OLLAMA_URLS", "http://127.0.0.1:11434").split(",") if u.strip()]
    common = {"ENVIRONMENT": os.environ.get("ENVIRONMENT", "development"), "PYTHONUNBUFFERED": "1", **S3_ENV}
    ssl_dir = ensure_certificate(ROOT / "haproxy" / "ssl")
    await enable_rabbitmq_management()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Supervisor(RUN_DIR / "logs", ROOT) as supervisor:
        await supervisor.start(
            ProcessSpec(
                "s3",
                (python, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(S3_PORT)),
                common,
                f"http://127.0.0.1:{S3_PORT}/",
            )
        )
        live = await answering_ollama(requested)
        simulated = not live
        sizes = capacity(open_files, simulated=simulated)
        if simulated:
            port, queue = str(SIMULATOR_PORT), sizes["SIMULATOR_MAX_QUEUE"]
            simulator_argv = (
                python,
                "-m",
                "inference_worker.simulator",
                "--port",
                port,
                "--max-queue",
                queue,
            )
            await supervisor.start(
                ProcessSpec(
                    "simulator",
                    simulator_argv,
                    common,
                    f"http://127.0.0.1:{SIMULATOR_PORT}/api/version",
                )
            )
            live = [f"http://127.0.0.1:{SIMULATOR_PORT}"]
        ollama_urls = ",".join(live)
        database_url = os.environ.get("DATABASE_URL", DATABASE_URL)
        first_admin_password = secrets.token_urlsafe(15) if await prepare_database(database_url) else None
        identity = {
            "DATABASE_URL": database_url,
            "INTERNAL_API_TOKEN": ensure_internal_token(RUN_DIR / "keys"),
        }
        print("starting auth, gateways and workers ...", flush=True)
        auth_env = {
            **common,
            **identity,
            "AUTH_PORT": str(AUTH_PORT),
            "AUTH_HOST": "127.0.0.1",
            "AUTH_SIGNING_KEY_FILE": str(private_key),
            "AUTH_TRUSTED_PROXIES": HAPROXY_AUTH_SOURCE,
        }
        if first_admin_password is not None:  # created at start-up, shown once in the banner
            auth_env |= {
                "AUTH_BOOTSTRAP_ADMIN_USERNAME": ADMIN_USERNAME,
                "AUTH_BOOTSTRAP_ADMIN_EMAIL": "admin@example.com",
                "AUTH_BOOTSTRAP_ADMIN_ORGANIZATION": "Platform",
                "AUTH_BOOTSTRAP_ADMIN_PASSWORD": first_admin_password,
            }
        await supervisor.start(
            ProcessSpec("auth", (python, "-m", "auth"), auth_env, f"http://127.0.0.1:{AUTH_PORT}/ready")
        )
        worker_env = {**common, "OLLAMA_URLS": ollama_urls}
        if "WORKER_CONCURRENCY" in sizes:
            worker_env["WORKER_CONCURRENCY"] = sizes["WORKER_CONCURRENCY"]
        starts = [
            supervisor.start(
                ProcessSpec(
                    f"worker-{i + 1}",
                    (python, "-m", "inference_worker"),
                    {**worker_env, "WORKER_HTTP_PORT": str(port)},
                    f"http://127.0.0.1:{port}/ready",
                )
            )
            for i, port in enumerate(WORKER_PORTS)
        ] + [
            supervisor.start(
                ProcessSpec(
                    f"gateway-{i + 1}",
                    (python, "-m", "gateway"),
                    {
                        **common,
                        "GATEWAY_PORT": str(port),
                        "INSTANCE_ID": f"gateway-{i + 1}",
                        "JWT_PUBLIC_KEY_FILE": str(public_key),
                        "AUTH_URL": f"http://127.0.0.1:{AUTH_PORT}",
                        "INTERNAL_API_TOKEN": identity["INTERNAL_API_TOKEN"],
                    },
                    f"http://127.0.0.1:{port}/ready",
                )
            )
            for i, port in enumerate(GATEWAY_PORTS)
        ]
        starts.append(
            supervisor.start(
                ProcessSpec(
                    "archiver",
                    (python, "-m", "archiver"),
                    {**common, "ARCHIVER_HTTP_PORT": str(ARCHIVER_PORT)},
                    f"http://127.0.0.1:{ARCHIVER_PORT}/ready",
                )
            )
        )
        starts.append(
            supervisor.start(
                ProcessSpec(
                    "ledger",
                    (python, "-m", "auth.ledger"),
                    {**common, **identity, "LEDGER_HTTP_PORT": str(LEDGER_PORT)},
                    f"http://127.0.0.1:{LEDGER_PORT}/ready",
                )
            )
        )
        await asyncio.gather(*starts)
        haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
        maxconn = int(sizes["HAPROXY_MAXCONN"])
        for i in range(haproxy_processes(OPEN_STREAMS, maxconn)):
            # More than one only where the open-file limit is too low for one to hold OPEN_STREAMS:
            # the same ports (SO_REUSEPORT), each its own stats port (8404, 8405 ...).
            stats_port = HAPROXY_STATS_PORT + i
            await supervisor.start(
                ProcessSpec(
                    "haproxy" if i == 0 else f"haproxy-{i + 1}",
                    (haproxy, "-db", "-f", str(ROOT / "haproxy" / "haproxy.cfg")),
                    {
                        "SSL_DIR": str(ssl_dir),
                        "CHECK_INTER": "1s",
                        "AUTH_SOURCE_ADDR": HAPROXY_AUTH_SOURCE,
                        "MAXCONN": str(maxconn),
                        "STATS_PORT": str(stats_port),
                    },
                    # The first is alone on the port while it starts: its /ready is its own.
                    f"http://127.0.0.1:{HAPROXY_PORT}/ready"
                    if i == 0
                    else f"http://127.0.0.1:{stats_port}/stats",
                )
            )
        prometheus = shutil.which("prometheus")
        if prometheus:
            await supervisor.start(
                ProcessSpec(
                    "prometheus",
                    (
                        prometheus,
                        f"--config.file={ROOT / 'monitoring' / 'prometheus.yml'}",
                        f"--storage.tsdb.path={RUN_DIR / 'prometheus'}",
                        f"--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}",
                    ),
                    {},
                    f"http://127.0.0.1:{PROMETHEUS_PORT}/-/ready",
                )
            )
        print(banner(ollama_urls, simulated, admin_note(first_admin_password)), flush=True)
        print(limits_note(open_files, sizes), flush=True)
        await stop.wait()
        print("\nstopping ...", flush=True)
    print("stopped; nothing left running.")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
