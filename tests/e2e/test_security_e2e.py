"""The seed's three steps end to end (auth -> gateway -> worker), and token checks against real keys."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest
from aiohttp.test_utils import TestClient
from helpers import auth_header, read_sse, start_client, text_of

from auth.app import create_app as create_auth_app
from auth.settings import AuthSettings
from inference_worker.simulator_text import expected_answer


@pytest.fixture
async def auth(auth_base_env: dict[str, str], redis: Any) -> AsyncIterator[TestClient[Any, Any]]:
    settings = AuthSettings.from_env({**auth_base_env, "AUTH_BCRYPT_ROUNDS": "4"})
    client: TestClient[Any, Any] = await start_client(create_auth_app(settings))
    yield client
    await client.close()


@pytest.fixture
async def gateway_jwks(gateway_factory: Any, auth: TestClient[Any, Any]) -> Any:
    """A gateway that knows no key up front: it fetches the auth service's JWKS."""
    return await gateway_factory(JWT_PUBLIC_KEY="", JWKS_URL=str(auth.make_url("/.well-known/jwks.json")))


async def _register_and_login(auth: TestClient[Any, Any], password: str = "testpass123") -> dict[str, Any]:
    name = f"testuser_{uuid.uuid4().hex[:8]}"
    registered = await auth.post(
        "/register",
        json={
            "username": name,
            "password": password,
            "email": f"{name}@company.com",
            "organization": "TestOrg",
        },
    )
    assert registered.status == 201, await registered.text()
    login = await auth.post("/login", json={"username": name, "password": password})
    assert login.status == 200
    return {**(await login.json()), **(await registered.json())}


async def test_seed_register_login_chat(auth: Any, gateway_jwks: Any, worker: Any) -> None:
    tokens = await _register_and_login(auth)
    assert tokens["token_type"] == "bearer"
    prompt = "שלום, מה שלומך?"
    response = await gateway_jwks.post(
        "/chat",
        json={"session_id": "session123", "prompt": prompt},
        headers=auth_header(tokens["access_token"]),
    )
    assert response.status == 200
    events = await read_sse(response)
    assert events[-1].event == "done"
    assert text_of(events) == expected_answer("llama3.2", [{"role": "user", "content": prompt}], 24)


async def test_logout_revokes_the_token_at_the_gateway(auth: Any, gateway_jwks: Any, worker: Any) -> None:
    tokens = await _register_and_login(auth)
    headers = auth_header(tokens["access_token"])
    assert (await gateway_jwks.get("/sessions", headers=headers)).status == 200
    assert (await auth.post("/logout", headers=headers)).status == 204
    response = await gateway_jwks.post("/chat", json={"session_id": "s", "prompt": "hi"}, headers=headers)
    assert response.status == 401
    assert (await response.json())["error"] == "token_revoked"


async def test_disabled_user_is_refused_at_the_gateway(
    auth: Any, gateway_jwks: Any, redis: Any, base_env: Any
) -> None:
    tokens = await _register_and_login(auth)
    headers = auth_header(tokens["access_token"])
    prefix = base_env["REDIS_KEY_PREFIX"]
    await redis.set(f"{prefix}disabled_user:{{u:{tokens['user_id']}}}", "1")  # what the admin endpoint sets
    response = await gateway_jwks.get("/sessions", headers=headers)
    assert response.status == 403
    assert (await response.json())["error"] == "user_disabled"


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def test_forged_tokens_are_rejected(auth: Any, gateway_jwks: Any) -> None:
    tokens = await _register_and_login(auth)
    good = tokens["access_token"]
    header, payload, signature = good.split(".")
    claims = jwt.decode(good, options={"verify_signature": False})
    jwks = await (await auth.get("/.well-known/jwks.json")).json()
    public = jwt.PyJWK.from_dict(jwks["keys"][0])

    forged = {
        "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{payload}.",
        "tampered payload": f"{header}.{_b64({**claims, 'sub': 'someone-else'})}.{signature}",
        "unknown kid": f"{_b64({**jwt.get_unverified_header(good), 'kid': 'nope'})}.{payload}.{signature}",
        "HS256 with the public key": jwt.encode(
            claims,
            public.key.public_bytes_raw(),
            algorithm="HS256",
            headers={"kid": jwt.get_unverified_header(good)["kid"]},
        ),
    }
    for name, token in forged.items():
        response = await gateway_jwks.get("/sessions", headers=auth_header(token))
        assert response.status == 401, name
        assert (await response.json())["error"] == "invalid_token", name
    assert (await gateway_jwks.get("/sessions", headers=auth_header(good))).status == 200


async def test_expired_token_is_rejected(gateway: Any, keys: Any) -> None:
    token = keys.mint("u", iat=int(time.time()) - 3600, nbf=int(time.time()) - 3600, ttl=-1800)
    response = await gateway.get("/sessions", headers=auth_header(token))
    assert response.status == 401
    assert (await response.json())["error"] == "token_expired"
