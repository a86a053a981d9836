"""Fixtures for the browser tests: the whole stack behind HAProxy, and Debian's headless Chromium
driven by Playwright.

The stack is the ``make run`` shape on free ports: the paced simulator, a worker, two gateways,
the archiver, the real auth service, S3, all behind HAProxy from ``haproxy/haproxy.cfg`` as
shipped, so the page is loaded and used through the front door. Chromium is the Debian package
(``scripts/ensure-services.sh chromium``; Playwright's own browser download is never used), with
a fresh profile per test (Playwright creates a temporary user-data dir for every launch).
Screenshots go to ``test-artifacts/web/<test name>/`` (gitignored), one per step.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization
from deploy.deploy_support import HAProxy, address, haproxy_env, write_self_signed
from helpers import KeyPair, start_server
from playwright.async_api import Browser, async_playwright
from web_support import ARTIFACTS, GATEWAYS_UP, ROOT, Shots, WebStack

from auth.app import create_app as create_auth_app
from auth.settings import AuthSettings
from inference_worker.simulator import SimulatorConfig

CHROMIUM = Path("/usr/bin/chromium")
# The flags the issue names; Playwright adds --user-data-dir=<fresh temporary dir> itself.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass(frozen=True)
class _Redis:
    url: str
    cluster: bool


@pytest.fixture(scope="session")
def redis_target(single_redis_url: str) -> _Redis:
    """One Redis, not also the cluster: these tests are about the page; the stack's Redis code is
    tested against both elsewhere, and a browser run per Redis flavour doubles the slowest tests."""
    return _Redis(single_redis_url, cluster=False)


@pytest.fixture
def sim_config() -> SimulatorConfig:
    """Paced: about 3 s per answer, so a test sees tokens arrive and can stop mid-answer."""
    return SimulatorConfig(ttft_ms=100, tokens_per_second=12, answer_tokens=36)


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    if not CHROMIUM.exists():
        pytest.skip("chromium is not installed (as root: scripts/ensure-services.sh chromium)")
    return CHROMIUM


@pytest.fixture(scope="session")
def haproxy_path() -> str:
    path = shutil.which("haproxy") or next(
        (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if Path(p).exists()), None
    )
    if path is None:
        pytest.skip("haproxy is not installed (as root: scripts/ensure-services.sh haproxy)")
    return path


@pytest.fixture(scope="session")
def page_installed() -> None:
    if not (ROOT / "gateway" / "web" / "vendor" / "marked.esm.js").exists():
        pytest.fail("the page's libraries are missing: run `make web`")


def _signing_pem(keys: KeyPair) -> str:
    return keys.private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@pytest.fixture
async def web_stack_factory(
    page_installed: None,
    haproxy_path: str,
    simulator: TestServer,
    worker_factory: Any,
    gateway_factory: Any,
    archiver_factory: Any,
    auth_base_env: dict[str, str],
    keys: KeyPair,
    tmp_path: Path,
) -> AsyncIterator[Any]:
    """``await web_stack_factory(auth_env, common_env, **gateway_env)``: the stack, every server UP
    in HAProxy. ``common_env`` goes to the worker, the archiver and the gateways alike (settings all
    of them read, such as ``REQUEST_QUEUE_MAX_LENGTH``: the first to declare the queue sets it)."""
    started: list[tuple[HAProxy, TestServer]] = []

    async def start(
        auth_env: dict[str, str] | None = None, common_env: dict[str, str] | None = None, **gateway_env: str
    ) -> WebStack:
        shared = common_env or {}
        worker = await worker_factory(**shared)
        auth = await start_server(
            create_auth_app(
                AuthSettings.from_env(
                    {
                        **auth_base_env,
                        "AUTH_BCRYPT_ROUNDS": "4",
                        "AUTH_HASH_WORKERS": "2",
                        "AUTH_SIGNING_KEY": _signing_pem(keys),
                        "AUTH_TRUSTED_PROXIES": "127.0.0.1",
                        **(auth_env or {}),
                    }
                )
            )
        )
        await archiver_factory(**shared)
        gateways = [
            await gateway_factory(
                **{
                    "INSTANCE_ID": f"web{i}",
                    "RATE_LIMIT_PER_MINUTE": "1000",
                    "AUTH_URL": f"http://{address(auth)}",  # API keys are verified there
                    **shared,
                    **gateway_env,
                }
            )
            for i in (1, 2)
        ]
        ssl_dir = tmp_path / "ssl"
        write_self_signed(ssl_dir)
        proxy = HAProxy(
            haproxy_env(
                ssl_dir,
                GATEWAY1=address(gateways[0]),
                GATEWAY2=address(gateways[1]),
                AUTH_ADDR=address(auth),
                IP_REQUESTS_PER_10S="10000",
            ),
            tmp_path / "haproxy.log",
        )
        started.append((proxy, auth))
        await proxy.start(haproxy_path)
        await proxy.wait_status(GATEWAYS_UP)
        return WebStack(
            proxy, haproxy_path, gateways, auth, simulator, worker, lambda: worker_factory(**shared)
        )

    yield start
    for proxy, auth in reversed(started):
        await proxy.stop()
        await auth.close()


@pytest.fixture
async def browser(chromium_path: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(chromium_path), headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        await browser.close()


@pytest.fixture
def shots(request: pytest.FixtureRequest) -> Shots:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    directory = ARTIFACTS / name
    print(f"screenshots: {directory}")
    return Shots(directory)
