"""Fixtures for the monitoring tests: promtool and prometheus (Debian's ``prometheus`` package,
installed by ``scripts/ensure-services.sh prometheus`` when missing), HAProxy, and a small running
system (two gateways, a worker on the simulator, an archiver with its own S3, the auth service)
through which real traffic has passed, so that every metric the dashboards and alerts read exists.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from helpers import KeyPair, start_server
from monitoring_support import ROOT, System, drive_traffic, free_port
from s3server import MotoServer

from archiver.http import create_archiver_health_app
from auth.app import create_app as create_auth_app
from auth.settings import AuthSettings
from inference_worker.http import create_worker_health_app


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _installed(name: str) -> str | None:
    return shutil.which(name) or next(
        (p for p in (f"/usr/bin/{name}", f"/usr/sbin/{name}") if Path(p).exists()), None
    )


@pytest.fixture(scope="session")
def prometheus_tools() -> tuple[str, str]:
    """Paths of ``prometheus`` and ``promtool``, installing the Debian package when possible."""
    if not (_installed("prometheus") and _installed("promtool")):
        subprocess.run(
            [str(ROOT / "scripts" / "ensure-services.sh"), "prometheus"],
            check=False,
            capture_output=True,
            timeout=600,
        )
    prometheus, promtool = _installed("prometheus"), _installed("promtool")
    if prometheus is None or promtool is None:
        pytest.skip(
            "prometheus/promtool are not installed and could not be installed "
            "(as root: scripts/ensure-services.sh prometheus, or apt-get install prometheus)"
        )
    return prometheus, promtool


@pytest.fixture(scope="session")
def promtool(prometheus_tools: tuple[str, str]) -> str:
    return prometheus_tools[1]


@pytest.fixture(scope="session")
def prometheus_bin(prometheus_tools: tuple[str, str]) -> str:
    return prometheus_tools[0]


# -- HAProxy's exporter ------------------------------------------------------------------------------
_HAPROXY_CFG = """\
global
    log stderr format raw local0 warning
defaults
    mode http
    timeout connect 1s
    timeout client 10s
    timeout server 10s
frontend stats
    bind 127.0.0.1:{stats_port}
    http-request use-service prometheus-exporter if {{ path /metrics }}
    stats enable
    stats uri /stats
frontend chat
    bind 127.0.0.1:{front_port}
    default_backend gateways
backend gateways
    option httpchk GET /health
    server gateway1 127.0.0.1:{server_port} check inter 1s
"""


@pytest.fixture
def haproxy_metrics_url(tmp_path: Path) -> Iterator[str]:
    """The Prometheus exporter of a running HAProxy with one frontend, backend and server (the
    exporter lists every metric for each of them, zero or not)."""
    binary = _installed("haproxy")
    if binary is None:
        pytest.skip("haproxy is not installed (as root: apt-get install haproxy)")
    stats_port = free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(
        _HAPROXY_CFG.format(stats_port=stats_port, front_port=free_port(), server_port=free_port())
    )
    with (tmp_path / "haproxy.log").open("wb") as log:
        process = subprocess.Popen([binary, "-f", str(config), "-db"], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while not _listening(stats_port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"haproxy did not start: {(tmp_path / 'haproxy.log').read_text()}")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{stats_port}/metrics"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


# -- a running system -----------------------------------------------------------------------------------
@pytest.fixture
async def archive_s3() -> AsyncIterator[MotoServer]:
    """The archiver's own S3, so the test can take it away; requested before ``archiver_factory``
    so it stops after the archiver closed."""
    server = MotoServer()
    await asyncio.to_thread(server.start)
    yield server
    await asyncio.to_thread(server.stop)


@pytest.fixture
async def auth_service(auth_base_env: dict[str, str]) -> AsyncIterator[TestServer]:
    settings = AuthSettings.from_env({**auth_base_env, "AUTH_BCRYPT_ROUNDS": "4", "AUTH_HASH_WORKERS": "2"})
    server = await start_server(create_auth_app(settings))
    yield server
    await server.close()


@pytest.fixture
async def system(
    archive_s3: MotoServer,
    auth_service: TestServer,
    simulator: TestServer,
    worker_factory: Any,
    gateway_factory: Any,
    archiver_factory: Any,
    keys: KeyPair,
) -> AsyncIterator[System]:
    worker = await worker_factory(OLLAMA_NODE_COOLDOWN="0.1")
    gateway = await gateway_factory(RATE_LIMIT_PER_MINUTE="100000", INSTANCE_ID="gw-main")
    limited = await gateway_factory(RATE_LIMIT_PER_MINUTE="1", INSTANCE_ID="gw-limited")
    archiver = await archiver_factory(
        S3_ENDPOINT_URL=archive_s3.url,
        S3_CONNECT_TIMEOUT="0.5",
        S3_READ_TIMEOUT="2",
        ARCHIVE_WRITE_ATTEMPTS="1",
        SWEEP_INTERVAL_SECONDS="0.5",
    )
    servers = [
        await start_server(create_worker_health_app(worker)),
        await start_server(create_archiver_health_app(archiver)),
    ]
    try:
        yield System(
            gateway=gateway,
            limited_gateway=limited,
            worker=worker,
            worker_http=servers[0],
            archiver=archiver,
            archiver_http=servers[1],
            archive_s3=archive_s3,
            auth=auth_service,
            simulator=simulator,
            keys=keys,
        )
    finally:
        for server in reversed(servers):
            await server.close()


@pytest.fixture
async def busy_system(system: System) -> System:
    """The system after :func:`drive_traffic`."""
    await drive_traffic(system)
    return system
