"""Refresh rotation, reuse detection, logout, and /me's token checks (revoked, expired, forged)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt
import pytest
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from auth.tokens import key_id

Client = TestClient[Any, Any]
Register = Any
Login = Any


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _error(resp: Any) -> str:
    data = await resp.json()
    assert set(data) == {"error", "message"}
    return str(data["error"])


async def test_refresh_rotates_and_old_token_reuse_revokes_the_family(
    client: Client, register: Register, login: Login
) -> None:
    user = await register()
    first = await login(user["username"], user["password"])

    resp = await client.post("/refresh", json={"refresh_token": first["refresh_token"]})
    assert resp.status == 200
    assert resp.headers["Cache-Control"] == "no-store"
    second = await resp.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert second["token_type"] == "bearer"
    assert (await client.get("/me", headers=_bearer(second["access_token"]))).status == 200

    # The rotated-away token is replayed: reuse detected, the whole family dies.
    reuse = await client.post("/refresh", json={"refresh_token": first["refresh_token"]})
    assert reuse.status == 401
    assert await _error(reuse) == "refresh_token_reused"
    current = await client.post("/refresh", json={"refresh_token": second["refresh_token"]})
    assert current.status == 401
    assert await _error(current) == "invalid_refresh_token"


async def test_other_logins_survive_a_revoked_family(
    client: Client, register: Register, login: Login
) -> None:
    user = await register()
    stolen = await login(user["username"], user["password"])
    other = await login(user["username"], user["password"])
    rotated = await client.post("/refresh", json={"refresh_token": stolen["refresh_token"]})
    assert rotated.status == 200
    assert (await client.post("/refresh", json={"refresh_token": stolen["refresh_token"]})).status == 401
    assert (await client.post("/refresh", json={"refresh_token": other["refresh_token"]})).status == 200


@pytest.mark.parametrize(
    "token",
    ["garbage", "a" * 32 + "." + "b" * 32 + "." + "c" * 43, ""],
    ids=["garbage", "well-formed-unknown", "empty"],
)
async def test_bad_refresh_tokens(client: Client, token: str) -> None:
    resp = await client.post("/refresh", json={"refresh_token": token})
    assert resp.status in {400, 401}
    assert await _error(resp) in {"invalid_refresh_token", "invalid_request"}


async def test_logout_revokes_access_token_and_refresh_family(
    client: Client, register: Register, login: Login, auth_redis: Any, auth_prefix: str
) -> None:
    user = await register()
    tokens = await login(user["username"], user["password"])
    access = tokens["access_token"]
    resp = await client.post("/logout", headers=_bearer(access))
    assert resp.status == 204

    me = await client.get("/me", headers=_bearer(access))
    assert me.status == 401
    assert await _error(me) == "token_revoked"
    # The denylist entry lives as long as the token would have (plus leeway), no longer.
    claims = jwt.decode(access, options={"verify_signature": False})
    ttl = await auth_redis.ttl(f"{auth_prefix}revoked_jti:{{u:{claims['sub']}}}:{claims['jti']}")
    assert 0 < ttl <= 900 + 5
    refreshed = await client.post("/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert refreshed.status == 401
    # Logging out twice with the same token is rejected as revoked.
    assert (await client.post("/logout", headers=_bearer(access))).status == 401


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_token"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "invalid_token"),
        ({"Authorization": "Bearer "}, "invalid_token"),
        ({"Authorization": "Bearer not.a.jwt"}, "invalid_token"),
    ],
)
async def test_me_rejects_missing_or_malformed_tokens(
    client: Client, headers: dict[str, str], code: str
) -> None:
    resp = await client.get("/me", headers=headers)
    assert resp.status == 401
    assert await _error(resp) == code
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.fixture
def signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _pem(key: Ed25519PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": "enterprise-chat-auth",
        "aud": "enterprise-chat",
        "sub": uuid.uuid4().hex,
        "org": "TestOrg",
        "role": "user",
        "username": "someone",
        "jti": uuid.uuid4().hex,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


async def test_configured_key_signs_and_crafted_tokens_are_checked(
    make_client: Any, register: Register, signing_key: Ed25519PrivateKey
) -> None:
    client = await make_client(AUTH_SIGNING_KEY=_pem(signing_key))
    kid = key_id(signing_key.public_key())
    jwks = await (await client.get("/.well-known/jwks.json")).json()
    assert [k["kid"] for k in jwks["keys"]] == [kid]

    user = await register(on=client)
    good = jwt.encode(
        _claims(sub=user["user_id"], username=user["username"]),
        signing_key,
        algorithm="EdDSA",
        headers={"kid": kid},
    )
    assert (await client.get("/me", headers=_bearer(good))).status == 200

    def sign(claims: dict[str, Any], key: Any = signing_key, alg: str = "EdDSA", kid_: str = kid) -> str:
        return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid_})

    now = int(time.time())
    cases = [
        (sign(_claims(exp=now - 60)), "token_expired"),
        (sign(_claims(aud="someone-else")), "invalid_token"),
        (sign(_claims(iss="evil")), "invalid_token"),
        (sign(_claims(jti=None)), "invalid_token"),
        (sign(_claims(org=None)), "invalid_token"),
        (sign(_claims(nbf=now + 300)), "invalid_token"),
        (sign(_claims(), key=Ed25519PrivateKey.generate()), "invalid_token"),
        (sign(_claims(), kid_="unknown"), "invalid_token"),
        (sign(_claims(), key="a-shared-secret-of-32-bytes-long!", alg="HS256"), "invalid_token"),
    ]
    for token, code in cases:
        resp = await client.get("/me", headers=_bearer(token))
        assert resp.status == 401, token
        assert await _error(resp) == code
