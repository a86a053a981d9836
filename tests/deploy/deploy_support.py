"""Helpers for the deployment tests: paths, free ports, certificates, a supervised HAProxy process."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import csv
import datetime
import io
import ipaddress
import os
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ROOT = Path(__file__).resolve().parents[2]
HAPROXY_CFG = ROOT / "haproxy" / "haproxy.cfg"
COMPOSE_FILE = ROOT / "compose" / "docker-compose.production.yml"
ENV_EXAMPLE = ROOT / "compose" / "env.enterprise.example"
DEPLOY_SCRIPT = ROOT / "deploy_enterprise.sh"
COMPOSE_SCHEMA = ROOT.parent / "shared" / "schemas" / "compose-spec.json"


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_self_signed(directory: Path, hostname: str = "localhost") -> Path:
    """A self-signed certificate for ``hostname`` and 127.0.0.1 as HAProxy wants it (certificate
    and key in one .pem, mode 0600) in ``directory``; returns the certificate alone, for clients."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(hostname), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = certificate.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    bundle = directory / f"{hostname}.pem"
    fd = os.open(bundle, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(cert_pem + key_pem)
    ca_file = directory.parent / f"{hostname}-ca.crt"
    ca_file.write_bytes(cert_pem)
    return ca_file


def client_tls(ca_file: Path) -> ssl.SSLContext:
    """A client context that trusts only the test certificate (hostname checked)."""
    return ssl.create_default_context(cafile=str(ca_file))


def basic_auth(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def haproxy_env(ssl_dir: Path, **overrides: str) -> dict[str, str]:
    """Environment for one HAProxy: fresh ports, every upstream on a closed port unless given."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "BIND_ADDR": "127.0.0.1",
        "HTTP_PORT": str(free_port()),
        "HTTPS_PORT": str(free_port()),
        "STATS_PORT": str(free_port()),
        "SSL_DIR": str(ssl_dir),
        "GATEWAY1": f"127.0.0.1:{free_port()}",
        "GATEWAY2": f"127.0.0.1:{free_port()}",
        "GATEWAY3": f"127.0.0.1:{free_port()}",
        "AUTH_ADDR": f"127.0.0.1:{free_port()}",
        "CHECK_INTER": "300ms",
        "MAXCONN": "2000",
    }
    env.update(overrides)
    return env


@dataclass
class HAProxy:
    """One ``haproxy -db`` child process with its environment and log file."""

    env: dict[str, str]
    log_path: Path
    process: asyncio.subprocess.Process | None = field(default=None, repr=False)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.env['HTTP_PORT']}"

    @property
    def https_url(self) -> str:
        return f"https://localhost:{self.env['HTTPS_PORT']}"

    @property
    def stats_url(self) -> str:
        return f"http://127.0.0.1:{self.env['STATS_PORT']}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def start(self, binary: str, timeout: float = 10.0) -> None:
        with self.log_path.open("wb") as log:
            self.process = await asyncio.create_subprocess_exec(
                binary,
                "-db",
                "-f",
                str(HAPROXY_CFG),
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        async with aiohttp.ClientSession() as session:
            while loop.time() < end:
                if self.process.returncode is not None:
                    raise RuntimeError(f"haproxy exited with {self.process.returncode}:\n{self.log()}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{self.stats_url}/stats") as response:
                        if response.status in {200, 401}:
                            return
                await asyncio.sleep(0.05)
        raise RuntimeError(f"haproxy did not answer within {timeout}s:\n{self.log()}")

    async def stop(self) -> None:
        process = self.process
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 5)
        except TimeoutError:
            process.kill()
            await process.wait()

    async def server_status(self, session: aiohttp.ClientSession) -> dict[str, str]:
        """``"backend/server" -> status`` (UP, DOWN, MAINT ...) from the stats CSV."""
        headers = {}
        if password := self.env.get("STATS_PASSWORD"):
            headers = basic_auth(self.env.get("STATS_USER", "admin"), password)
        async with session.get(f"{self.stats_url}/stats;csv", headers=headers) as response:
            response.raise_for_status()
            text = await response.text()
        rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
        return {
            f"{row['pxname']}/{row['svname']}": row["status"]
            for row in rows
            if row["svname"] not in {"FRONTEND", "BACKEND"}
        }

    async def wait_status(self, expected: dict[str, str], timeout: float = 15.0) -> None:
        """Wait until every named server has its expected status (``UP`` matches ``UP 1/2`` too)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        status: dict[str, str] = {}
        async with aiohttp.ClientSession() as session:
            while loop.time() < end:
                status = await self.server_status(session)
                if all(status.get(name, "").split(" ")[0] == want for name, want in expected.items()):
                    return
                await asyncio.sleep(0.05)
        raise AssertionError(f"servers not {expected} within {timeout}s: {status}\n{self.log()[-4000:]}")


HAProxyFactory = Callable[..., Awaitable[HAProxy]]
GatewayClient = TestClient[web.Request, web.Application]


@dataclass(frozen=True)
class Tls:
    """A temporary certificate directory for HAProxy and the certificate clients should trust."""

    ssl_dir: Path
    ca_file: Path


def address(server: TestServer | GatewayClient) -> str:
    """``host:port`` of an in-process test server."""
    return f"127.0.0.1:{server.port}"


@dataclass
class Stack:
    """A worker, 3 gateways and the auth service behind one HAProxy."""

    haproxy: HAProxy
    gateways: list[GatewayClient]
    auth: TestServer

    async def wait_all_up(self) -> None:
        await self.haproxy.wait_status(
            {
                "gateways/gateway1": "UP",
                "gateways/gateway2": "UP",
                "gateways/gateway3": "UP",
                "auth/auth1": "UP",
            }
        )


StackFactory = Callable[..., Awaitable[Stack]]
