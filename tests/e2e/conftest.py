"""Fixtures for whole-system tests of identity and accounting: the auth service signing with the
suite's key pair (so gateways accept its tokens), gateways that verify API keys with it, and the
usage ledger consumer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives import serialization
from helpers import KeyPair, start_client

from auth.app import create_app as create_auth_app
from auth.ledger import Ledger
from auth.settings import AuthSettings, LedgerSettings

INTERNAL_TOKEN = "internal-test-token"
AuthFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
async def auth_factory(
    auth_base_env: dict[str, str], keys: KeyPair, redis: Any
) -> AsyncIterator[AuthFactory]:
    signing = keys.private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    started: list[TestClient[Any, Any]] = []

    async def start(**overrides: str) -> TestClient[Any, Any]:
        env = {
            **auth_base_env,
            "AUTH_BCRYPT_ROUNDS": "4",
            "AUTH_SIGNING_KEY": signing,
            "INTERNAL_API_TOKEN": INTERNAL_TOKEN,
            **overrides,
        }
        client: TestClient[Any, Any] = await start_client(create_auth_app(AuthSettings.from_env(env)))
        started.append(client)
        return client

    yield start
    for client in reversed(started):
        await client.close()


@pytest.fixture
def key_gateway_env(auth_factory: AuthFactory) -> Callable[[TestClient[Any, Any]], dict[str, str]]:
    """Gateway settings that verify API keys at ``auth``."""

    def env(auth: TestClient[Any, Any]) -> dict[str, str]:
        return {"AUTH_URL": str(auth.make_url("")).rstrip("/"), "INTERNAL_API_TOKEN": INTERNAL_TOKEN}

    return env


@pytest.fixture
async def ledger(auth_base_env: dict[str, str], amqp: Any) -> AsyncIterator[Ledger]:
    settings = LedgerSettings.from_env(
        {
            **auth_base_env,
            "LEDGER_HTTP_PORT": "0",
            "LEDGER_BATCH_SECONDS": "0.05",
            "LEDGER_QUOTA_INTERVAL": "0.1",
        }
    )
    async with Ledger(settings) as running:
        yield running
