"""Fixtures for the auth service tests: a real Redis, a unique key prefix per test, app factories."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from redis.exceptions import RedisError

from auth.app import close_redis, create_app
from auth.cli import create_admin
from auth.settings import AuthSettings
from common.redis import RedisClient, create_redis

AuthClient = TestClient[Any, Any]
ClientFactory = Callable[..., Awaitable[AuthClient]]


@pytest.fixture
async def auth_redis(redis_target: Any) -> AsyncIterator[RedisClient]:
    """A plain client for assertions and clean-up: single Redis or the cluster (both are run)."""
    client = create_redis(redis_target.url, cluster=redis_target.cluster, max_connections=32)
    try:
        await client.ping()
    except (OSError, RedisError) as exc:  # pragma: no cover - environment problem
        await close_redis(client)
        pytest.skip(f"Redis is not reachable at {redis_target.url}: {exc}")
    yield client
    await close_redis(client)


@pytest.fixture
async def auth_prefix(auth_redis: RedisClient) -> AsyncIterator[str]:
    """A key prefix owned by this test; every key under it is deleted afterwards."""
    prefix = f"t-{uuid.uuid4().hex}:"
    yield prefix
    async for key in auth_redis.scan_iter(match=f"{prefix}*", count=500):
        await auth_redis.delete(key)


@pytest.fixture
async def auth_db(postgres_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to this test's database, for assertions."""
    conn = await asyncpg.connect(postgres_url)
    yield conn
    await conn.close()


@pytest.fixture
def auth_env(auth_prefix: str, redis_target: Any, postgres_url: str) -> dict[str, str]:
    return {
        "ENVIRONMENT": "test",
        "DATABASE_URL": postgres_url,
        "REDIS_URL": redis_target.url,
        "REDIS_CLUSTER": "true" if redis_target.cluster else "false",
        "REDIS_KEY_PREFIX": auth_prefix,
        "AUTH_BCRYPT_ROUNDS": "4",
        "AUTH_HASH_WORKERS": "2",
    }


@pytest.fixture
def make_settings(auth_env: dict[str, str]) -> Callable[..., AuthSettings]:
    def make(**overrides: str) -> AuthSettings:
        return AuthSettings.from_env({**auth_env, **overrides})

    return make


@pytest.fixture
def make_client(
    auth_prefix: str, aiohttp_client: Any, make_settings: Callable[..., AuthSettings]
) -> ClientFactory:
    """``await make_client(AUTH_X="...")``: a test client on a fresh app with env overrides."""

    async def make(**overrides: str) -> AuthClient:
        client: AuthClient = await aiohttp_client(create_app(make_settings(**overrides)))
        return client

    return make


@pytest.fixture
async def client(make_client: ClientFactory) -> AuthClient:
    return await make_client()


Register = Callable[..., Awaitable[dict[str, Any]]]
Login = Callable[..., Awaitable[dict[str, Any]]]


@pytest.fixture
def register(client: AuthClient) -> Register:
    """Register a user (unique defaults: each registration creates its own organization, as an
    existing name is refused) and return the 201 body plus the password used."""

    async def go(
        username: str | None = None,
        password: str = "correct horse battery",
        email: str | None = None,
        organization: str | None = None,
        on: AuthClient | None = None,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        name = username or f"user_{uuid.uuid4().hex[:12]}"
        body = {
            "username": name,
            "password": password,
            "email": email or f"{name}@company.com",
            "organization": organization or f"Org {uuid.uuid4().hex[:12]}",
        }
        resp = await (on or client).post("/register", json=body, headers=headers)
        assert resp.status == 201, await resp.text()
        data: dict[str, Any] = await resp.json()
        return {**data, "password": password}

    return go


@pytest.fixture
def login(client: AuthClient) -> Login:
    """Log in and return the token body (asserting 200)."""

    async def go(
        username: str, password: str, on: AuthClient | None = None, headers: dict[str, str] | None = None
    ) -> dict[str, Any]:
        body = {"username": username, "password": password}
        resp = await (on or client).post("/login", json=body, headers=headers)
        assert resp.status == 200, await resp.text()
        data: dict[str, Any] = await resp.json()
        return data

    return go


ADMIN_PASSWORD = "Admin pass phrase 1"


@pytest.fixture
async def admin_token(make_settings: Callable[..., AuthSettings], login: Login) -> str:
    """An access token of a fresh admin, created the way operators do (``auth.cli create-admin``)."""
    name = f"admin_{uuid.uuid4().hex[:8]}"
    await create_admin(
        make_settings(),
        username=name,
        email=f"{name}@company.com",
        organization="HQ",
        password=ADMIN_PASSWORD,
    )
    tokens = await login(name, ADMIN_PASSWORD)
    return str(tokens["access_token"])
