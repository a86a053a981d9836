"""API keys at the auth service: shown once, stored as a hash, listed as prefix and metadata,
revoked by their owner or their org's admin; service accounts' keys; the audit log records it all,
only platform admins read it, and nobody can change it."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

Client = TestClient[Any, Any]
Register = Callable[..., Awaitable[dict[str, Any]]]
Login = Callable[..., Awaitable[dict[str, Any]]]


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _token(register: Register, login: Login) -> tuple[dict[str, Any], str]:
    user = await register()
    return user, str((await login(user["username"], user["password"]))["access_token"])


async def _verify(client: Client, key: str) -> int:
    return (await client.post("/internal/api-keys/verify", json={"api_key": key})).status


async def test_a_key_is_shown_once_stored_as_a_hash_and_revoked_by_its_owner(
    client: Client, register: Register, login: Login, auth_db: Any
) -> None:
    user, token = await _token(register, login)
    resp = await client.post(
        "/me/api-keys",
        json={"name": "Open WebUI", "scopes": ["chat"], "expires_in": 3600},
        headers=_auth(token),
    )
    assert resp.status == 201
    created = await resp.json()
    key = created["api_key"]
    assert key.startswith(created["prefix"]) and created["scopes"] == ["chat"] and created["expires_at"]
    stored = await auth_db.fetchrow("SELECT * FROM api_keys WHERE id = $1", created["key_id"])
    assert stored["secret_hash"] == hashlib.sha256(key.encode()).hexdigest()
    assert key not in str(dict(stored))
    listed = (await (await client.get("/me/api-keys", headers=_auth(token))).json())["api_keys"]
    assert [k["key_id"] for k in listed] == [created["key_id"]]
    assert "api_key" not in listed[0] and listed[0]["last_used_at"] is None
    assert await _verify(client, key) == 200  # what a gateway asks once per cache period
    listed = (await (await client.get("/me/api-keys", headers=_auth(token))).json())["api_keys"]
    assert listed[0]["last_used_at"] is not None
    assert await _verify(client, key[:-1] + ("A" if key[-1] != "A" else "B")) == 401  # same prefix

    _, other_token = await _token(register, login)
    assert (
        await client.delete(f"/me/api-keys/{created['key_id']}", headers=_auth(other_token))
    ).status == 404
    assert (await client.delete(f"/me/api-keys/{created['key_id']}", headers=_auth(token))).status == 204
    assert await _verify(client, key) == 401
    listed = (await (await client.get("/me/api-keys", headers=_auth(token))).json())["api_keys"]
    assert listed[0]["revoked_at"] is not None
    # Disabling the owner ends the key too.
    second = await (await client.post("/me/api-keys", json={"name": "again"}, headers=_auth(token))).json()
    await auth_db.execute("UPDATE users SET disabled = true WHERE id = $1", user["user_id"])
    assert await _verify(client, second["api_key"]) == 401


async def test_org_admins_give_service_accounts_keys_and_never_touch_another_orgs(
    client: Client, auth_db: Any, register: Register, login: Login
) -> None:
    admin_a, token_a = await _token(register, login)
    admin_b, token_b = await _token(register, login)
    for admin in (admin_a, admin_b):
        await auth_db.execute("UPDATE users SET role = 'org_admin' WHERE id = $1", admin["user_id"])
    resp = await client.post(
        "/org/service-accounts", json={"name": f"ci_{uuid.uuid4().hex[:6]}"}, headers=_auth(token_a)
    )
    assert resp.status == 201
    bot = await resp.json()
    assert bot["kind"] == "service" and bot["organization_id"] == admin_a["organization_id"]
    # A service account has no password: it cannot log in.
    assert (await client.post("/login", json={"username": bot["username"], "password": "x"})).status == 401
    path = f"/org/service-accounts/{bot['user_id']}/api-keys"
    assert (await client.post(path, json={"name": "ci"}, headers=_auth(token_b))).status == 404
    resp = await client.post(path, json={"name": "ci"}, headers=_auth(token_a))
    assert resp.status == 201
    key = await resp.json()
    verified = await (await client.post("/internal/api-keys/verify", json={"api_key": key["api_key"]})).json()
    assert (verified["user_id"], verified["organization_id"]) == (bot["user_id"], admin_a["organization_id"])
    listed_b = (await (await client.get("/org/api-keys", headers=_auth(token_b))).json())["api_keys"]
    assert key["key_id"] not in {k["key_id"] for k in listed_b}
    assert (await client.delete(f"/org/api-keys/{key['key_id']}", headers=_auth(token_b))).status == 404
    assert (await client.delete(f"/org/api-keys/{key['key_id']}", headers=_auth(token_a))).status == 204
    assert await _verify(client, key["api_key"]) == 401
    # Org admins do not read the audit log.
    assert (await client.get("/admin/audit", headers=_auth(token_a))).status == 403


async def test_the_audit_log_records_and_only_platform_admins_read_it(
    client: Client, register: Register, login: Login, admin_token: str, auth_db: Any
) -> None:
    user, token = await _token(register, login)
    bad = await client.post("/login", json={"username": user["username"], "password": "wrong password"})
    assert bad.status == 401
    key = await (await client.post("/me/api-keys", json={"name": "k"}, headers=_auth(token))).json()
    await client.delete(f"/me/api-keys/{key['key_id']}", headers=_auth(token))
    await client.post(f"/admin/users/{user['user_id']}/disable", headers=_auth(admin_token))
    await client.post(
        f"/admin/users/{user['user_id']}/role", json={"role": "org_admin"}, headers=_auth(admin_token)
    )
    await client.get("/admin/users", headers=_auth(admin_token))

    assert (await client.get("/admin/audit", headers=_auth(token))).status in (403,)
    resp = await client.get("/admin/audit", params={"limit": "1000"}, headers=_auth(admin_token))
    assert resp.status == 200
    entries = (await resp.json())["entries"]
    mine = [
        e for e in entries if user["user_id"] in (e["actor_id"], e["target_id"], e["details"].get("owner_id"))
    ]
    actions = [e["action"] for e in mine]
    for action in (
        "user_registered",
        "login",
        "login_failed",
        "api_key_created",
        "api_key_revoked",
        "user_disabled",
        "role_changed",
    ):
        assert action in actions, action
    assert "admin_read_users" in {e["action"] for e in entries}
    only_failed = await (
        await client.get("/admin/audit", params={"action": "login_failed"}, headers=_auth(admin_token))
    ).json()
    assert {e["action"] for e in only_failed["entries"]} == {"login_failed"}
    # Append-only: no API edits it (no such route), and the database refuses it too.
    assert (await client.delete("/admin/audit", headers=_auth(admin_token))).status == 405
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await auth_db.execute("UPDATE audit_log SET action = 'nothing'")
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await auth_db.execute("DELETE FROM audit_log")


async def test_text_postgresql_cannot_store_is_a_400_not_a_500(
    client: Client, register: Register, login: Login, admin_token: str
) -> None:
    """A NUL character (found by the fuzzer) in a body field or a query parameter."""
    _, token = await _token(register, login)
    resp = await client.post("/me/api-keys", json={"name": "bad\u0000name"}, headers=_auth(token))
    assert resp.status == 400
    assert (await resp.json())["error"] == "invalid_input"
    resp = await client.get("/admin/audit", params={"organization_id": "\u0000"}, headers=_auth(admin_token))
    assert resp.status == 400
    assert (await resp.json())["error"] == "invalid_input"
