"""PostgreSQL down: logins, registrations and key management answer 503 with Retry-After, while
chats with tokens and keys already verified keep working (the gateway never needs PostgreSQL);
everything recovers by itself when it is back."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from helpers import auth_header
from tcp_proxy import TcpProxy

PASSWORD = "testpass123"


@pytest.fixture
async def postgres_proxy(postgres_url: str) -> AsyncIterator[tuple[TcpProxy, str]]:
    """A forwarder to this test's database that the test can cut: an outage for one service."""
    parts = urlsplit(postgres_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await proxy.start()
    netloc = f"{parts.username}@{proxy.address}" if parts.username else proxy.address
    yield proxy, urlunsplit(parts._replace(netloc=netloc))
    await proxy.close()


async def test_postgres_down_is_503_for_identity_and_invisible_to_chats(
    auth_factory: Any, key_gateway_env: Any, gateway_factory: Any, worker: Any, postgres_proxy: Any
) -> None:
    proxy, url = postgres_proxy
    # A short cache, so the outage outlasts it: the gateway keeps serving the key it verified.
    auth = await auth_factory(DATABASE_URL=url, API_KEY_CACHE_TTL="1")
    gateway = await gateway_factory(**key_gateway_env(auth), API_KEY_CACHE_TTL="1")
    name = f"pg_{uuid.uuid4().hex[:8]}"
    body = {"username": name, "password": PASSWORD, "email": f"{name}@x.com", "organization": f"O {name}"}
    assert (await auth.post("/register", json=body)).status == 201
    token = (await (await auth.post("/login", json={"username": name, "password": PASSWORD})).json())[
        "access_token"
    ]
    key = (await (await auth.post("/me/api-keys", json={"name": "k"}, headers=auth_header(token))).json())[
        "api_key"
    ]
    chat = {"session_id": "s", "prompt": "hi", "stream": False}
    assert (await gateway.post("/chat", json=chat, headers=auth_header(key))).status == 200

    await proxy.cut()
    for method, path, payload in [
        ("POST", "/login", {"username": name, "password": PASSWORD}),
        ("POST", "/register", {**body, "username": name + "x", "email": f"x{name}@x.com"}),
        ("POST", "/me/api-keys", {"name": "k2"}),
        ("GET", "/me/api-keys", None),
    ]:
        resp = await auth.request(method, path, json=payload, headers=auth_header(token))
        assert resp.status == 503, (path, await resp.text())
        assert resp.headers["Retry-After"] == "1"
        assert (await resp.json())["error"] == "unavailable"
    assert (await auth.get("/ready")).status == 503
    assert (await auth.get("/health")).status == 200
    # Chats go on: the access token is checked with a public key, the key from the gateway's
    # cache (past its TTL the auth service cannot answer, so the verified answer is kept).
    await asyncio.sleep(1.2)
    for credential in (token, key):
        assert (await gateway.post("/chat", json=chat, headers=auth_header(credential))).status == 200
    # A key the gateway never saw cannot be verified now: 503, not 401 (it may be valid).
    resp = await gateway.get("/sessions", headers=auth_header("ekey_" + "Z" * 12 + "Y" * 43))
    assert resp.status == 503

    await proxy.restore()
    resp = await auth.post("/login", json={"username": name, "password": PASSWORD})
    assert resp.status == 200
