"""POST /login: tokens, indistinguishable failures, JWT verifiable from the JWKS, odd passwords."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from aiohttp.test_utils import TestClient

from common.http import SECURITY_HEADERS

Client = TestClient[Any, Any]
Register = Any
Login = Any


async def test_login_returns_bearer_tokens(client: Client, register: Register) -> None:
    user = await register()
    resp = await client.post("/login", json={"username": user["username"], "password": user["password"]})
    assert resp.status == 200
    data = await resp.json()
    assert data["token_type"] == "bearer"
    assert data["expires_in"] == 900
    assert data["access_token"].count(".") == 2
    assert data["refresh_token"]
    assert resp.headers["Cache-Control"] == "no-store"
    for name, value in SECURITY_HEADERS.items():
        assert resp.headers[name] == value


async def test_seed_example_register_then_login(client: Client) -> None:
    body = {
        "username": "testuser",
        "password": "testpass123",
        "email": "test@company.com",
        "organization": "TestOrg",
    }
    assert (await client.post("/register", json=body)).status == 201
    resp = await client.post("/login", json={"username": "testuser", "password": "testpass123"})
    assert resp.status == 200


async def test_username_is_case_insensitive_at_login(
    client: Client, register: Register, login: Login
) -> None:
    user = await register(username="MixedCase_User")
    await login("mixedcase_user", user["password"])


async def test_wrong_password_and_unknown_user_answer_identically(client: Client, register: Register) -> None:
    user = await register()
    wrong = await client.post("/login", json={"username": user["username"], "password": "wrong password!"})
    unknown = await client.post("/login", json={"username": "nobody_here", "password": "wrong password!"})
    assert wrong.status == unknown.status == 401
    assert (
        await wrong.json()
        == await unknown.json()
        == {
            "error": "invalid_credentials",
            "message": "username or password is incorrect",
        }
    )
    assert set(wrong.headers) - {"Date"} == set(unknown.headers) - {"Date"}


async def test_access_token_has_kid_and_verifies_against_jwks(
    client: Client, register: Register, login: Login
) -> None:
    user = await register(organization="Acme")
    tokens = await login(user["username"], user["password"])
    header = jwt.get_unverified_header(tokens["access_token"])
    assert header["alg"] == "EdDSA"
    jwks_resp = await client.get("/.well-known/jwks.json")
    assert jwks_resp.status == 200
    jwks = await jwks_resp.json()
    by_kid = {key["kid"]: key for key in jwks["keys"]}
    assert header["kid"] in by_kid
    assert by_kid[header["kid"]]["kty"] == "OKP" and by_kid[header["kid"]]["crv"] == "Ed25519"
    public = jwt.PyJWK(by_kid[header["kid"]])
    claims = jwt.decode(
        tokens["access_token"],
        public.key,
        algorithms=["EdDSA"],
        audience="enterprise-chat",
        issuer="enterprise-chat-auth",
    )
    assert claims["sub"] == user["user_id"]
    assert claims["username"] == user["username"]
    assert claims["org"] == user["organization_id"]  # the organization's id; its name may change
    assert claims["role"] == "user"
    assert claims["jti"]
    now = time.time()
    assert claims["iat"] <= now + 1 and claims["nbf"] <= now + 1
    assert claims["exp"] - claims["iat"] == 900
    # Tampering breaks the signature.
    head, payload, sig = tokens["access_token"].split(".")
    forged = f"{head}.{payload}.{sig[:-4]}AAAA"
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(forged, public.key, algorithms=["EdDSA"], audience="enterprise-chat")


async def test_me_returns_the_user(client: Client, register: Register, login: Login) -> None:
    user = await register()
    tokens = await login(user["username"], user["password"])
    resp = await client.get("/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert resp.status == 200
    data = await resp.json()
    assert data["user_id"] == user["user_id"]
    assert data["role"] == "user" and data["disabled"] is False
    assert "password_hash" not in data


async def test_long_passwords_sharing_72_bytes_are_different(
    client: Client, register: Register, login: Login
) -> None:
    prefix = "p" * 72
    user = await register(password=prefix + "-first")
    await login(user["username"], prefix + "-first")
    resp = await client.post("/login", json={"username": user["username"], "password": prefix + "-second"})
    assert resp.status == 401


async def test_very_long_password_up_to_the_limit(client: Client, register: Register, login: Login) -> None:
    password = "Long pass phrase " * 60  # 1020 characters
    user = await register(password=password)
    await login(user["username"], password)
    resp = await client.post("/login", json={"username": user["username"], "password": password[:-1]})
    assert resp.status == 401


@pytest.mark.parametrize(
    "password",
    ["סיסמה סודית מאוד", "🔐🔑🚀🌍🎉🙂💡🔥", "这个密码很安全吗？", "emoji🙂 + עברית + ascii"],
    ids=["hebrew", "emoji", "cjk", "mixed"],
)
async def test_unicode_passwords_work(
    client: Client, register: Register, login: Login, password: str
) -> None:
    user = await register(password=password)
    await login(user["username"], password)
    resp = await client.post("/login", json={"username": user["username"], "password": password + "x"})
    assert resp.status == 401


async def test_equivalent_unicode_forms_match(client: Client, register: Register, login: Login) -> None:
    composed = "caf\u00e9 au lait"  # é as one code point
    decomposed = "cafe\u0301 au lait"  # e + combining acute accent
    user = await register(password=composed)
    await login(user["username"], decomposed)


async def test_login_body_validation(client: Client) -> None:
    resp = await client.post("/login", json={"username": "someone"})
    assert resp.status == 400
    assert (await resp.json())["error"] == "invalid_request"
    resp = await client.post("/login", json={"username": "someone", "password": "x", "remember": True})
    assert resp.status == 400


async def test_login_rehashes_when_the_cost_changes(
    make_client: Any, register: Register, login: Login, auth_db: Any
) -> None:
    user = await register()  # stored with cost 4

    async def stored() -> str:
        return str(await auth_db.fetchval("SELECT password_hash FROM users WHERE id = $1", user["user_id"]))

    assert (await stored()).startswith("hmac-sha256+bcrypt$$2b$04$")
    stronger = await make_client(AUTH_BCRYPT_ROUNDS="5")
    await login(user["username"], user["password"], on=stronger)
    assert (await stored()).startswith("hmac-sha256+bcrypt$$2b$05$")
    await login(user["username"], user["password"], on=stronger)
