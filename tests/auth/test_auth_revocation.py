"""Access tokens die with their login and with their user: logout revokes every token of the login
(``sid``), refresh-token reuse revokes the thief's access token, ``/logout/all``, a password change
and an admin disable revoke everything of the user; auth's own guard applies it all."""

from __future__ import annotations

import uuid
from typing import Any

import jwt
import pytest
from aiohttp.test_utils import TestClient

from auth.refresh import RefreshOutcome, RefreshTokenStore
from common.keyspace import Keyspace
from common.revocation import REVOCATION_MARGIN_SECONDS, TokenRevocation

Client = TestClient[Any, Any]
Register = Any
Login = Any
NEW_PASSWORD = "a brand new pass phrase"


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _me(client: Client, token: str) -> tuple[int, str | None]:
    resp = await client.get("/me", headers=_bearer(token))
    body = await resp.json()
    return resp.status, body.get("error")


async def _refresh(client: Client, refresh_token: str) -> Any:
    return await client.post("/refresh", json={"refresh_token": refresh_token})


async def test_logout_with_one_token_revokes_every_token_of_that_login(
    client: Client, register: Register, login: Login, auth_redis: Any, auth_prefix: str
) -> None:
    user = await register()
    first = await login(user["username"], user["password"])
    rotated = await (await _refresh(client, first["refresh_token"])).json()
    other = await login(user["username"], user["password"])  # another device, another login
    at1, at2 = first["access_token"], rotated["access_token"]
    assert await _me(client, at1) == (200, None)

    resp = await client.post("/logout", headers=_bearer(at2))
    assert resp.status == 204
    assert resp.headers["Cache-Control"] == "no-store"
    assert await _me(client, at1) == (401, "token_revoked")  # the older token of the same login
    assert await _me(client, at2) == (401, "token_revoked")
    assert (await _refresh(client, rotated["refresh_token"])).status == 401
    assert await _me(client, other["access_token"]) == (200, None)  # other logins live on

    sid = jwt.decode(at1, options={"verify_signature": False})["sid"]
    ttl = await auth_redis.ttl(Keyspace(auth_prefix).revoked_sid(user["user_id"], sid))
    assert 900 < ttl <= 900 + 5 + REVOCATION_MARGIN_SECONDS


@pytest.mark.parametrize("who_rotates_first", ["thief", "owner"])
async def test_refresh_token_reuse_revokes_the_access_tokens_of_the_family(
    client: Client, register: Register, login: Login, who_rotates_first: str
) -> None:
    user = await register()
    owner = await login(user["username"], user["password"])
    other = await login(user["username"], user["password"])
    stolen = owner["refresh_token"]
    first = await (await _refresh(client, stolen)).json()  # rotates the family
    assert await _me(client, first["access_token"]) == (200, None)

    reuse = await _refresh(client, stolen)  # the other holder presents the used token
    assert reuse.status == 401
    assert (await reuse.json())["error"] == "refresh_token_reused"
    # Whoever rotated first (possibly the thief) loses the access token it got, at once.
    assert await _me(client, first["access_token"]) == (401, "token_revoked")
    assert await _me(client, owner["access_token"]) == (401, "token_revoked")
    assert (await _refresh(client, first["refresh_token"])).status == 401
    assert await _me(client, other["access_token"]) == (200, None)


async def test_logout_all_revokes_every_login_and_a_new_login_works_at_once(
    client: Client, register: Register, login: Login
) -> None:
    user = await register()
    logins = [await login(user["username"], user["password"]) for _ in range(3)]
    rotated = await (await _refresh(client, logins[2]["refresh_token"])).json()
    assert (await client.post("/logout/all")).status == 401  # needs a caller

    resp = await client.post("/logout/all", headers=_bearer(logins[0]["access_token"]))
    assert resp.status == 204
    assert resp.headers["Cache-Control"] == "no-store"
    assert await resp.read() == b""
    for token in [t["access_token"] for t in logins] + [rotated["access_token"]]:
        assert await _me(client, token) == (401, "token_revoked")
    for token in [t["refresh_token"] for t in logins[:2]] + [rotated["refresh_token"]]:
        assert (await _refresh(client, token)).status == 401
    # Within the same second as the revocation: the new login's token is honoured.
    fresh = await login(user["username"], user["password"])
    assert await _me(client, fresh["access_token"]) == (200, None)
    again = await (await _refresh(client, fresh["refresh_token"])).json()
    assert await _me(client, again["access_token"]) == (200, None)


async def test_password_change_needs_the_current_password_and_revokes_everything(
    client: Client, register: Register, login: Login
) -> None:
    user = await register()
    first = await login(user["username"], user["password"])
    second = await login(user["username"], user["password"])
    token = first["access_token"]
    url = "/me/password"

    assert (await client.post(url, json={"current_password": "x", "new_password": "y"})).status == 401
    bad_bodies: list[tuple[Any, str]] = [
        ({"current_password": user["password"]}, "invalid_request"),
        ({"current_password": user["password"], "new_password": 5}, "invalid_request"),
        ({"current_password": "", "new_password": NEW_PASSWORD}, "invalid_request"),
        ({"current_password": user["password"], "new_password": NEW_PASSWORD, "x": 1}, "invalid_request"),
        ([], "invalid_request"),
    ]
    for body, code in bad_bodies:
        resp = await client.post(url, json=body, headers=_bearer(token))
        assert resp.status == 400, body
        assert await resp.json() == {"error": code, "message": (await resp.json())["message"]}
    raw = await client.post(
        url, data=b"{nope", headers={**_bearer(token), "Content-Type": "application/json"}
    )
    assert raw.status == 400 and (await raw.json())["error"] == "malformed_json"

    wrong = await client.post(
        url,
        json={"current_password": "not my password", "new_password": NEW_PASSWORD},
        headers=_bearer(token),
    )
    assert wrong.status == 403
    assert (await wrong.json())["error"] == "invalid_current_password"
    weak = await client.post(
        url,
        json={"current_password": user["password"], "new_password": "password123"},
        headers=_bearer(token),
    )
    assert weak.status == 400 and (await weak.json())["error"] == "weak_password"
    assert await _me(client, token) == (200, None)  # refusals change nothing

    done = await client.post(
        url, json={"current_password": user["password"], "new_password": NEW_PASSWORD}, headers=_bearer(token)
    )
    assert done.status == 204
    assert done.headers["Cache-Control"] == "no-store"
    for tokens in (first, second):
        assert await _me(client, tokens["access_token"]) == (401, "token_revoked")
        assert (await _refresh(client, tokens["refresh_token"])).status == 401
    old = await client.post("/login", json={"username": user["username"], "password": user["password"]})
    assert old.status == 401
    fresh = await login(user["username"], NEW_PASSWORD)
    assert await _me(client, fresh["access_token"]) == (200, None)


async def test_guessing_the_current_password_is_throttled(
    make_client: Any, register: Register, login: Login
) -> None:
    client = await make_client(AUTH_LOGIN_FREE_FAILURES="2", AUTH_LOGIN_BACKOFF_BASE="30")
    user = await register(on=client)
    token = (await login(user["username"], user["password"], on=client))["access_token"]
    statuses = []
    for i in range(5):
        body = {"current_password": f"guess number {i}", "new_password": NEW_PASSWORD}
        statuses.append((await client.post("/me/password", json=body, headers=_bearer(token))).status)
    assert statuses == [403, 403, 403, 429, 429]


async def test_admin_disable_revokes_everything_and_enable_revives_nothing(
    client: Client, register: Register, login: Login, admin_token: str
) -> None:
    admin = admin_token
    user = await register()
    tokens = await login(user["username"], user["password"])
    target = f"/admin/users/{user['user_id']}"

    assert (await client.post(f"{target}/disable", headers=_bearer(admin))).status == 200
    assert await _me(client, tokens["access_token"]) == (403, "user_disabled")
    assert (await client.post(f"{target}/enable", headers=_bearer(admin))).status == 200
    assert await _me(client, tokens["access_token"]) == (401, "token_revoked")
    assert (await _refresh(client, tokens["refresh_token"])).status == 401
    fresh = await login(user["username"], user["password"])
    assert await _me(client, fresh["access_token"]) == (200, None)


async def test_a_login_racing_a_revocation_gets_no_refresh_family(auth_redis: Any, auth_prefix: str) -> None:
    """The generation is read before the password check; if everything is revoked meanwhile, the
    family is not created, and a family stamped with an older generation cannot be rotated."""
    keys = Keyspace(auth_prefix)
    revocation = TokenRevocation(auth_redis, keys, login_ttl=905)
    store = RefreshTokenStore(auth_redis, keys, ttl=600, revoked_login_ttl=965)
    user_id = uuid.uuid4().hex
    generation = await revocation.generation(user_id)
    issued = await store.issue(user_id, generation)
    assert issued is not None
    await revocation.revoke_user(user_id)  # e.g. a password change lands ...
    assert await store.issue(user_id, generation) is None  # ... before this login's family exists
    assert (await store.rotate(issued[0])).outcome is RefreshOutcome.INVALID  # and older families die
    current = await revocation.generation(user_id)
    assert current == generation + 1
    fresh = await store.issue(user_id, current)
    assert fresh is not None
    rotated = await store.rotate(fresh[0])
    assert rotated.outcome is RefreshOutcome.ROTATED and rotated.generation == current
