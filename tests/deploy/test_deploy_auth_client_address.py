"""The local run's answer to "every client is HAProxy's 127.0.0.1": HAProxy connects to auth from
its own loopback address (AUTH_SOURCE_ADDR, devstack: 127.0.0.2), the only peer whose
X-Forwarded-For auth believes (AUTH_TRUSTED_PROXIES). Clients through HAProxy are throttled by
their own address; a client calling auth's port directly on the same host cannot pose as another.

Observed through the registration throttle at one registration per address.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from deploy_support import HAProxyFactory, address
from helpers import start_server

from auth.app import create_app as create_auth_app
from auth.settings import AuthSettings
from devstack.__main__ import HAPROXY_AUTH_SOURCE


@pytest.fixture
async def auth_behind_source(
    redis_target: Any, namespace: str, redis: Any, postgres_url: str
) -> AsyncIterator[TestServer]:
    settings = AuthSettings.from_env(
        {
            "ENVIRONMENT": "test",
            "DATABASE_URL": postgres_url,
            "REDIS_URL": redis_target.url,
            "REDIS_CLUSTER": "true" if redis_target.cluster else "false",
            "REDIS_KEY_PREFIX": f"{namespace}:",
            "AUTH_BCRYPT_ROUNDS": "4",
            "AUTH_HASH_WORKERS": "2",
            "AUTH_TRUSTED_PROXIES": HAPROXY_AUTH_SOURCE,
            "AUTH_REGISTER_MAX_PER_IP": "1",
        }
    )
    server = await start_server(create_auth_app(settings))
    yield server
    await server.close()


async def _register(url: str, source: str, forwarded_for: str | None = None) -> int:
    name = f"user_{uuid.uuid4().hex[:10]}"
    body = {"username": name, "password": "testpass123", "email": f"{name}@company.com", "organization": name}
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(f"{url}/register", json=body, headers=headers) as response,
    ):
        return response.status


async def test_auth_sees_real_client_addresses_through_haproxy_only(
    haproxy_factory: HAProxyFactory, auth_behind_source: TestServer
) -> None:
    proxy = await haproxy_factory(AUTH_ADDR=address(auth_behind_source), AUTH_SOURCE_ADDR=HAPROXY_AUTH_SOURCE)
    await proxy.wait_status({"auth/auth1": "UP"})
    direct = f"http://{address(auth_behind_source)}"

    # Through HAProxy: each client is its own address, whatever X-Forwarded-For it sends.
    assert await _register(proxy.http_url, "127.0.0.1", forwarded_for="203.0.113.1") == 201
    assert await _register(proxy.http_url, "127.0.0.1", forwarded_for="203.0.113.2") == 429
    assert await _register(proxy.http_url, "127.0.0.3") == 201
    # Directly, from the same host: a peer that is not HAProxy is taken as itself.
    assert await _register(direct, "127.0.0.1", forwarded_for="127.0.0.9") == 429
    assert await _register(direct, "127.0.0.4", forwarded_for="198.51.100.5") == 201
    assert await _register(direct, "127.0.0.4", forwarded_for="198.51.100.6") == 429
