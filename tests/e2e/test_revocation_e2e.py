"""Revocations made by the auth service take effect at the gateway at once: logout (the whole
login), refresh-token reuse (the thief's access token), logout/all, a password change, a disable."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from helpers import auth_header, start_client

from auth.app import create_app as create_auth_app
from auth.cli import create_admin
from auth.settings import AuthSettings

PASSWORD = "testpass123"


@pytest.fixture
def auth_settings(auth_base_env: dict[str, str]) -> AuthSettings:
    return AuthSettings.from_env({**auth_base_env, "AUTH_BCRYPT_ROUNDS": "4"})


@pytest.fixture
async def auth(auth_settings: AuthSettings, redis: Any) -> AsyncIterator[TestClient[Any, Any]]:
    client: TestClient[Any, Any] = await start_client(create_auth_app(auth_settings))
    yield client
    await client.close()


@pytest.fixture
async def gateway_jwks(gateway_factory: Any, auth: TestClient[Any, Any]) -> Any:
    return await gateway_factory(JWT_PUBLIC_KEY="", JWKS_URL=str(auth.make_url("/.well-known/jwks.json")))


async def _register(auth: Any) -> dict[str, Any]:
    name = f"e2e_{uuid.uuid4().hex[:8]}"
    body = {
        "username": name,
        "password": PASSWORD,
        "email": f"{name}@company.com",
        "organization": f"Org {name}",
    }
    resp = await auth.post("/register", json=body)
    assert resp.status == 201, await resp.text()
    return {**(await resp.json()), "password": PASSWORD}


async def _login(auth: Any, username: str, password: str = PASSWORD) -> dict[str, Any]:
    resp = await auth.post("/login", json={"username": username, "password": password})
    assert resp.status == 200, await resp.text()
    data: dict[str, Any] = await resp.json()
    return data


async def _gateway(gateway: Any, token: str) -> tuple[int, str | None]:
    resp = await gateway.get("/sessions", headers=auth_header(token))
    return resp.status, (await resp.json()).get("error") if resp.status != 200 else None


async def _chat(gateway: Any, token: str) -> int:
    body = {"session_id": "s", "prompt": "hi", "stream": False}
    return int((await gateway.post("/chat", json=body, headers=auth_header(token))).status)


async def test_logout_with_a_newer_token_revokes_the_older_one_at_the_gateway(
    auth: Any, gateway_jwks: Any, worker: Any
) -> None:
    user = await _register(auth)
    first = await _login(auth, user["username"])
    second = await (await auth.post("/refresh", json={"refresh_token": first["refresh_token"]})).json()
    assert await _gateway(gateway_jwks, first["access_token"]) == (200, None)
    assert (await auth.post("/logout", headers=auth_header(second["access_token"]))).status == 204
    assert await _gateway(gateway_jwks, first["access_token"]) == (401, "token_revoked")
    assert await _chat(gateway_jwks, first["access_token"]) == 401


async def test_refresh_reuse_revokes_the_thiefs_access_token_at_the_gateway(
    auth: Any, gateway_jwks: Any
) -> None:
    user = await _register(auth)
    victim = await _login(auth, user["username"])
    thief = await (await auth.post("/refresh", json={"refresh_token": victim["refresh_token"]})).json()
    assert await _gateway(gateway_jwks, thief["access_token"]) == (200, None)
    reuse = await auth.post("/refresh", json={"refresh_token": victim["refresh_token"]})
    assert reuse.status == 401
    assert await _gateway(gateway_jwks, thief["access_token"]) == (401, "token_revoked")


async def test_logout_all_and_password_change_revoke_at_the_gateway(auth: Any, gateway_jwks: Any) -> None:
    user = await _register(auth)
    a, b = await _login(auth, user["username"]), await _login(auth, user["username"])
    assert (await auth.post("/logout/all", headers=auth_header(a["access_token"]))).status == 204
    for tokens in (a, b):
        assert await _gateway(gateway_jwks, tokens["access_token"]) == (401, "token_revoked")
    c = await _login(auth, user["username"])
    assert await _gateway(gateway_jwks, c["access_token"]) == (200, None)

    change = {"current_password": PASSWORD, "new_password": "another pass phrase"}
    resp = await auth.post("/me/password", json=change, headers=auth_header(c["access_token"]))
    assert resp.status == 204
    assert await _gateway(gateway_jwks, c["access_token"]) == (401, "token_revoked")
    d = await _login(auth, user["username"], "another pass phrase")
    assert await _gateway(gateway_jwks, d["access_token"]) == (200, None)


async def test_admin_disable_revokes_at_the_gateway_and_enable_revives_nothing(
    auth: Any, gateway_jwks: Any, auth_settings: AuthSettings
) -> None:
    name = f"admin_{uuid.uuid4().hex[:8]}"
    await create_admin(
        auth_settings, username=name, email=f"{name}@company.com", organization="HQ", password="Admin pass 12"
    )
    admin = (await _login(auth, name, "Admin pass 12"))["access_token"]
    user = await _register(auth)
    tokens = await _login(auth, user["username"])
    url = f"/admin/users/{user['user_id']}"
    assert (await auth.post(f"{url}/disable", headers=auth_header(admin))).status == 200
    assert await _gateway(gateway_jwks, tokens["access_token"]) == (403, "user_disabled")
    assert (await auth.post(f"{url}/enable", headers=auth_header(admin))).status == 200
    assert await _gateway(gateway_jwks, tokens["access_token"]) == (401, "token_revoked")
