"""Fixtures for the deployment tests: HAProxy as a child process, TLS material, the auth service,
and a whole stack (worker + 3 gateways + auth) behind HAProxy.

HAProxy runs from ``haproxy/haproxy.cfg`` exactly as shipped; only environment variables differ
(free ports, a temporary certificate directory, upstream addresses). ``make test`` installs it
(``scripts/ensure-services.sh haproxy``); without it the HAProxy tests are skipped.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization
from deploy_support import (
    GatewayClient,
    HAProxy,
    HAProxyFactory,
    Stack,
    StackFactory,
    Tls,
    address,
    haproxy_env,
    write_self_signed,
)
from helpers import KeyPair, start_server

from auth.app import create_app as create_auth_app
from auth.settings import AuthSettings

# The gateways' own per-user limit is not under test here; HAProxy's per-IP limit is.
GATEWAY_OVERRIDES = {"RATE_LIMIT_PER_MINUTE": "100000"}


@pytest.fixture(scope="session")
def haproxy_bin() -> str:
    path = shutil.which("haproxy") or next(
        (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if Path(p).exists()), None
    )
    if path is None:
        pytest.skip(
            "haproxy is not installed and could not be installed "
            "(as root: scripts/ensure-services.sh haproxy, or apt-get install haproxy)"
        )
    return path


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    ssl_dir = tmp_path / "ssl"
    return Tls(ssl_dir, write_self_signed(ssl_dir))


@pytest.fixture
async def haproxy_factory(haproxy_bin: str, tls: Tls, tmp_path: Path) -> AsyncIterator[HAProxyFactory]:
    """``await haproxy_factory(GATEWAY1=..., TIMEOUT_SERVER=...)`` starts one HAProxy, stopped at
    teardown; unspecified upstreams point at closed ports."""
    started: list[HAProxy] = []

    async def start(**env: str) -> HAProxy:
        proxy = HAProxy(haproxy_env(tls.ssl_dir, **env), tmp_path / f"haproxy-{len(started)}.log")
        started.append(proxy)
        await proxy.start(haproxy_bin)
        return proxy

    yield start
    for proxy in reversed(started):
        await proxy.stop()


@pytest.fixture
async def auth_server(auth_base_env: dict[str, str], keys: KeyPair) -> AsyncIterator[TestServer]:
    """The real auth service, signing with the test key pair (so gateways accept its tokens) and
    trusting HAProxy's X-Forwarded-For, as in compose."""
    signing_pem = keys.private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    settings = AuthSettings.from_env(
        {
            **auth_base_env,
            "AUTH_BCRYPT_ROUNDS": "4",
            "AUTH_HASH_WORKERS": "2",
            "AUTH_SIGNING_KEY": signing_pem,
            "AUTH_TRUSTED_PROXIES": "127.0.0.1",  # HAProxy, as in compose (its fixed address)
        }
    )
    server = await start_server(create_auth_app(settings))
    yield server
    await server.close()


@pytest.fixture
async def stack_factory(
    worker: Any, gateway_factory: Any, auth_server: TestServer, haproxy_factory: HAProxyFactory
) -> StackFactory:
    """A worker on the simulator, 3 gateways and the auth service behind one HAProxy, all up."""

    async def start(gateway_env: dict[str, str] | None = None, **haproxy_overrides: str) -> Stack:
        gateways: list[GatewayClient] = [
            await gateway_factory(**{**GATEWAY_OVERRIDES, "INSTANCE_ID": f"gw{i}", **(gateway_env or {})})
            for i in (1, 2, 3)
        ]
        proxy = await haproxy_factory(
            GATEWAY1=address(gateways[0]),
            GATEWAY2=address(gateways[1]),
            GATEWAY3=address(gateways[2]),
            AUTH_ADDR=address(auth_server),
            **haproxy_overrides,
        )
        stack = Stack(proxy, gateways, auth_server)
        await stack.wait_all_up()
        return stack

    return start


@pytest.fixture
async def stack(stack_factory: StackFactory) -> Stack:
    return await stack_factory()


@pytest.fixture
async def upstream() -> AsyncIterator[TestServer]:
    """A stand-in upstream: ``/ready`` is 200 and every other path echoes the request headers."""

    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"path": request.path, "headers": dict(request.headers)})

    async def ready(request: web.Request) -> web.Response:
        return web.json_response({"status": "ready"})

    app = web.Application()
    app.router.add_get("/ready", ready)
    app.router.add_route("*", "/{tail:.*}", echo)
    server = await start_server(app)
    yield server
    await server.close()
