"""API keys at the gateway: the openai SDK works with a key for longer than an access token lives,
a revoked key is refused at once on every gateway, an expired key by the gateway's own clock,
and a key's scopes are enforced."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from typing import Any

import openai
import pytest
from aiohttp.test_utils import TestClient
from helpers import auth_header

from auth.appkeys import POOL, SETTINGS
from gateway.appkeys import VERIFIER

PASSWORD = "testpass123"
TOKEN_TTL = 2


@pytest.fixture
async def auth(auth_factory: Any) -> TestClient[Any, Any]:
    client: TestClient[Any, Any] = await auth_factory(
        AUTH_ACCESS_TOKEN_TTL=str(TOKEN_TTL), AUTH_TOKEN_LEEWAY="0"
    )
    return client


@pytest.fixture
async def gateways(gateway_factory: Any, auth: TestClient[Any, Any], key_gateway_env: Any) -> list[Any]:
    """Three gateways, as behind HAProxy, verifying keys at this auth service."""
    return [await gateway_factory(**key_gateway_env(auth), JWT_LEEWAY_SECONDS="0") for _ in range(3)]


async def _user_token(auth: Any) -> tuple[dict[str, Any], str]:
    name = f"k_{uuid.uuid4().hex[:8]}"
    body = {
        "username": name,
        "password": PASSWORD,
        "email": f"{name}@company.com",
        "organization": f"Org {name}",
    }
    resp = await auth.post("/register", json=body)
    assert resp.status == 201, await resp.text()
    user = await resp.json()
    resp = await auth.post("/login", json={"username": name, "password": PASSWORD})
    return user, str((await resp.json())["access_token"])


async def _key(auth: Any, token: str, **body: Any) -> dict[str, Any]:
    resp = await auth.post("/me/api-keys", json={"name": "tool", **body}, headers=auth_header(token))
    assert resp.status == 201, await resp.text()
    data: dict[str, Any] = await resp.json()
    return data


async def test_the_openai_sdk_works_with_a_key_beyond_the_token_lifetime(
    auth: Any, gateways: list[Any], worker: Any
) -> None:
    gateway = gateways[0]
    _, token = await _user_token(auth)
    key = await _key(auth, token)
    assert key["api_key"].startswith("ekey_")
    sdk = openai.AsyncOpenAI(base_url=str(gateway.make_url("/v1")), api_key=key["api_key"], max_retries=0)
    try:
        first = await sdk.chat.completions.create(
            model="llama3.2", messages=[{"role": "user", "content": "hi"}]
        )
        assert first.choices[0].message.content
        await asyncio.sleep(TOKEN_TTL + 1.5)
        # The access token is dead by now ...
        resp = await gateway.get("/sessions", headers=auth_header(token))
        assert (resp.status, (await resp.json())["error"]) == (401, "token_expired")
        # ... the key is not.
        later = await sdk.chat.completions.create(
            model="llama3.2", messages=[{"role": "user", "content": "again"}]
        )
        assert later.usage is not None and later.usage.completion_tokens > 0
        models = await sdk.models.list()
        assert models.data
    finally:
        await sdk.close()


async def test_a_revoked_key_is_refused_at_once_on_every_gateway(auth: Any, gateways: list[Any]) -> None:
    _, token = await _user_token(auth)
    # Log in again after the key is made: the access token may expire during the test.
    key = await _key(auth, token)
    headers = auth_header(key["api_key"])
    for gateway in gateways:  # every gateway has verified (and cached) the key
        assert (await gateway.get("/sessions", headers=headers)).status == 200
    listed = await (await auth.get("/me/api-keys", headers=auth_header(token))).json()
    assert [k["key_id"] for k in listed["api_keys"]] == [key["key_id"]]
    assert "api_key" not in listed["api_keys"][0] and listed["api_keys"][0]["last_used_at"] is not None
    resp = await auth.delete(f"/me/api-keys/{key['key_id']}", headers=auth_header(token))
    assert resp.status == 204
    for gateway in gateways:  # the very next request, no waiting
        resp = await gateway.get("/sessions", headers=headers)
        assert (resp.status, (await resp.json())["error"]) == (401, "token_revoked")
    # A gateway that has never seen the key asks the auth service, which refuses it too.
    fresh = await asyncio.gather(*(g.get("/v1/models", headers=headers) for g in gateways))
    assert {r.status for r in fresh} == {401}


async def test_expired_keys_unknown_keys_and_scopes(auth: Any, gateways: list[Any], redis: Any) -> None:
    gateway = gateways[0]
    _, token = await _user_token(auth)
    models_only = await _key(auth, token, scopes=["models"])
    headers = auth_header(models_only["api_key"])
    assert (await gateway.get("/v1/models", headers=headers)).status == 200
    resp = await gateway.get("/sessions", headers=headers)
    assert (resp.status, (await resp.json())["error"]) == (403, "insufficient_scope")
    resp = await auth.post(
        "/me/api-keys", json={"name": "x", "scopes": ["admin"]}, headers=auth_header(token)
    )
    assert (resp.status, (await resp.json())["error"]) == (400, "invalid_scope")

    unknown = "ekey_" + "A" * 12 + "B" * 43
    resp = await gateway.get("/sessions", headers=auth_header(unknown))
    assert (resp.status, (await resp.json())["error"]) == (401, "invalid_api_key")
    # An expired key: the gateway's cached answer carries the expiry and is checked per request.
    expiring = await _key(auth, token, expires_in=60)
    assert (await gateway.get("/sessions", headers=auth_header(expiring["api_key"]))).status == 200
    # Time passes (the key's expiry moved into the past, in the cache and in PostgreSQL).
    entry = gateway.app[VERIFIER]._api_keys._cache[expiring["api_key"]]
    entry.principal = dataclasses.replace(entry.principal, expires_at=time.time() - 1)
    await auth.app[POOL].execute("UPDATE api_keys SET expires_at = now() WHERE id = $1", expiring["key_id"])
    resp = await gateway.get("/sessions", headers=auth_header(expiring["api_key"]))
    assert (resp.status, (await resp.json())["error"]) == (401, "invalid_api_key")


async def test_the_internal_verification_needs_the_internal_token(auth: Any) -> None:
    _, token = await _user_token(auth)
    key = await _key(auth, token)
    resp = await auth.post("/internal/api-keys/verify", json={"api_key": key["api_key"]})
    assert resp.status == 403
    resp = await auth.post(
        "/internal/api-keys/verify",
        json={"api_key": key["api_key"]},
        headers={"X-Internal-Token": auth.app[SETTINGS].internal_token},
    )
    assert resp.status == 200 and (await resp.json())["key_id"] == key["key_id"]
