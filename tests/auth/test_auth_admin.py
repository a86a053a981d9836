"""Admin endpoints, disabling users (visible to the gateway via Redis), and creating the first admin."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from auth.cli import create_admin
from auth.settings import AuthSettings
from common.http import ApiError
from common.keyspace import Keyspace

Client = TestClient[Any, Any]
Register = Any
Login = Any
ROOT = Path(__file__).resolve().parents[2]
ADMIN_PASSWORD = "Admin pass phrase 1"


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_admin_endpoints_need_the_admin_role(client: Client, register: Register, login: Login) -> None:
    user = await register()
    token = (await login(user["username"], user["password"]))["access_token"]
    target = user["user_id"]
    calls = [
        client.get("/admin/users", headers=_bearer(token)),
        client.post(f"/admin/users/{target}/disable", headers=_bearer(token)),
        client.post(f"/admin/users/{target}/enable", headers=_bearer(token)),
        client.post(f"/admin/users/{target}/role", json={"role": "admin"}, headers=_bearer(token)),
    ]
    for resp in await asyncio.gather(*calls):
        assert resp.status == 403
        assert (await resp.json())["error"] == "forbidden"
    assert (await client.get("/admin/users")).status == 401


async def test_create_admin_and_paginated_listing(
    client: Client, register: Register, admin_token: str
) -> None:
    for _ in range(5):
        await register()
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        query = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        resp = await client.get("/admin/users", params=query, headers=_bearer(admin_token))
        assert resp.status == 200
        data = await resp.json()
        assert len(data["users"]) <= 2
        seen.extend(u["user_id"] for u in data["users"])
        assert all("password_hash" not in u for u in data["users"])
        pages += 1
        cursor = data["next"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 6  # five users and the admin
    assert pages == 3
    bad = await client.get("/admin/users", params={"cursor": "zzz"}, headers=_bearer(admin_token))
    assert bad.status == 400
    bad = await client.get("/admin/users", params={"limit": "0"}, headers=_bearer(admin_token))
    assert bad.status == 400


async def test_disable_blocks_login_me_refresh_and_sets_the_gateway_key(
    client: Client, register: Register, login: Login, admin_token: str, auth_redis: Any, auth_prefix: str
) -> None:
    user = await register()
    tokens = await login(user["username"], user["password"])
    resp = await client.post(f"/admin/users/{user['user_id']}/disable", headers=_bearer(admin_token))
    assert resp.status == 200
    assert (await resp.json())["disabled"] is True
    assert await auth_redis.exists(Keyspace(auth_prefix).disabled_user(user["user_id"]))

    denied = await client.post("/login", json={"username": user["username"], "password": user["password"]})
    assert denied.status == 403
    assert (await denied.json())["error"] == "user_disabled"
    me = await client.get("/me", headers=_bearer(tokens["access_token"]))
    assert me.status == 403
    assert (await me.json())["error"] == "user_disabled"
    refreshed = await client.post("/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert refreshed.status == 401

    enabled = await client.post(f"/admin/users/{user['user_id']}/enable", headers=_bearer(admin_token))
    assert enabled.status == 200
    assert not await auth_redis.exists(Keyspace(auth_prefix).disabled_user(user["user_id"]))
    await login(user["username"], user["password"])


async def test_wrong_password_for_disabled_user_is_still_401(
    client: Client, register: Register, admin_token: str
) -> None:
    user = await register()
    await client.post(f"/admin/users/{user['user_id']}/disable", headers=_bearer(admin_token))
    resp = await client.post("/login", json={"username": user["username"], "password": "not the password"})
    assert resp.status == 401  # no way to learn an account is disabled without its password


async def test_role_change_and_admin_guard_rails(
    client: Client, register: Register, login: Login, admin_token: str
) -> None:
    user = await register()
    url = f"/admin/users/{user['user_id']}/role"
    bad = await client.post(url, json={"role": "superuser"}, headers=_bearer(admin_token))
    assert bad.status == 400 and (await bad.json())["error"] == "invalid_role"
    ok = await client.post(url, json={"role": "admin"}, headers=_bearer(admin_token))
    assert ok.status == 200 and (await ok.json())["role"] == "admin"
    promoted = (await login(user["username"], user["password"]))["access_token"]
    assert (await client.get("/admin/users", headers=_bearer(promoted))).status == 200

    missing = await client.post(f"/admin/users/{uuid.uuid4().hex}/disable", headers=_bearer(admin_token))
    assert missing.status == 404 and (await missing.json())["error"] == "user_not_found"
    me = await (await client.get("/me", headers=_bearer(admin_token))).json()
    own = await client.post(f"/admin/users/{me['user_id']}/disable", headers=_bearer(admin_token))
    assert own.status == 409

    # Demotion takes effect for admin checks at once, even with the old token.
    demote = await client.post(url, json={"role": "user"}, headers=_bearer(admin_token))
    assert demote.status == 200
    assert (await client.get("/admin/users", headers=_bearer(promoted))).status == 403


async def test_create_admin_refuses_taken_names_and_weak_passwords(
    make_settings: Any, register: Register
) -> None:
    settings: AuthSettings = make_settings()
    user = await register()
    with pytest.raises(ApiError) as taken:
        await create_admin(
            settings,
            username=user["username"],
            email="new@company.com",
            organization="HQ",
            password=ADMIN_PASSWORD,
        )
    assert taken.value.code == "username_taken"
    with pytest.raises(ApiError) as weak:
        await create_admin(
            settings, username="root_admin", email="r@company.com", organization="HQ", password="short"
        )
    assert weak.value.code == "weak_password"


async def test_create_admin_command_reads_password_from_stdin(
    auth_env: dict[str, str], make_client: Any, login: Login
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTH_BOOTSTRAP_ADMIN_")}
    env.update(auth_env)
    args = ["--username", "cli_admin", "--email", "cli@company.com", "--organization", "HQ"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "auth", "create-admin", *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        cwd=ROOT, env=env,
    )  # fmt: skip
    out, err = await proc.communicate(f"{ADMIN_PASSWORD}\n".encode())
    assert proc.returncode == 0, err.decode()
    assert b'"role":"admin"' in out
    client = await make_client()
    token = (await login("cli_admin", ADMIN_PASSWORD, on=client))["access_token"]
    assert (await client.get("/admin/users", headers=_bearer(token))).status == 200

    again = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "auth", "create-admin", *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        cwd=ROOT, env={**env, "AUTH_BOOTSTRAP_ADMIN_PASSWORD": ADMIN_PASSWORD},
    )  # fmt: skip
    _, err = await again.communicate(b"")
    assert again.returncode == 1
    assert b"username_taken" in err


async def test_bootstrap_admin_from_environment_at_start(make_client: Any, login: Login) -> None:
    env = {
        "AUTH_BOOTSTRAP_ADMIN_USERNAME": "boot_admin",
        "AUTH_BOOTSTRAP_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "AUTH_BOOTSTRAP_ADMIN_EMAIL": "boot@company.com",
    }
    client = await make_client(**env)
    token = (await login("boot_admin", ADMIN_PASSWORD, on=client))["access_token"]
    assert (await client.get("/admin/users", headers=_bearer(token))).status == 200
    # A second instance starting with the same settings leaves the existing admin alone.
    second = await make_client(**{**env, "AUTH_BOOTSTRAP_ADMIN_PASSWORD": "Another pass phrase 2"})
    await login("boot_admin", ADMIN_PASSWORD, on=second)
