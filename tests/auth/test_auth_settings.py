"""AuthSettings.from_env: defaults, refusals at start-up, signing keys and key rotation."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from auth.settings import AuthSettings
from auth.tokens import build_token_service, key_id
from common.settings import SettingsError

Register = Any


def _private_pem(key: Any) -> str:
    return str(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
    )


def _public_pem(key: Ed25519PrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def test_defaults() -> None:
    settings = AuthSettings.from_env({})
    assert settings.port == 8001
    assert settings.issuer == "enterprise-chat-auth"
    assert settings.audience == "enterprise-chat"
    assert settings.access_token_ttl == 900
    assert settings.refresh_token_ttl == 14 * 24 * 3600
    assert settings.bcrypt_rounds == 12
    assert settings.login_free_failures == 3
    assert (settings.login_backoff_base, settings.login_backoff_max) == (1, 900)
    assert (settings.login_max_failures_per_ip, settings.login_user_ceiling) == (30, 100)
    assert settings.login_failure_window == 900
    assert settings.login_known_address_days == 30
    assert (settings.register_max_per_ip, settings.register_window) == (20, 3600)
    assert settings.trusted_proxies == ()  # X-Forwarded-For is believed from nobody unless configured
    assert settings.max_body_bytes == 64 * 1024
    assert settings.signing_key_pem is None and settings.bootstrap_admin is None


def test_secrets_stay_out_of_repr() -> None:
    pem = _private_pem(Ed25519PrivateKey.generate())
    settings = AuthSettings.from_env(
        {
            "AUTH_SIGNING_KEY": pem,
            "AUTH_BOOTSTRAP_ADMIN_USERNAME": "root_admin",
            "AUTH_BOOTSTRAP_ADMIN_PASSWORD": "Sup3r secret phrase",
            "AUTH_BOOTSTRAP_ADMIN_EMAIL": "root@company.com",
        }
    )
    assert "PRIVATE KEY" not in repr(settings)
    assert "Sup3r" not in repr(settings)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"ENVIRONMENT": "production"}, "AUTH_SIGNING_KEY_FILE"),
        ({"AUTH_SIGNING_KEY": "x", "AUTH_SIGNING_KEY_FILE": "/tmp/x"}, "only one"),
        ({"AUTH_SIGNING_KEY_FILE": "/nonexistent/key.pem"}, "cannot read"),
        ({"AUTH_BOOTSTRAP_ADMIN_USERNAME": "root_admin"}, "half configured"),
        ({"AUTH_BCRYPT_ROUNDS": "3"}, ">= 4"),
        ({"AUTH_BCRYPT_ROUNDS": "32"}, "<= 31"),
        ({"ENVIRONMENT": "production", "AUTH_SIGNING_KEY": "k", "AUTH_BCRYPT_ROUNDS": "8"}, "production"),
        (
            {
                "ENVIRONMENT": "production",
                "AUTH_SIGNING_KEY": "k",
                "AUTH_BOOTSTRAP_ADMIN_USERNAME": "root_admin",
                "AUTH_BOOTSTRAP_ADMIN_PASSWORD": "change-me-please",
                "AUTH_BOOTSTRAP_ADMIN_EMAIL": "root@company.com",
            },
            "placeholder",
        ),
        ({"AUTH_TRUST_FORWARDED": "true"}, "AUTH_TRUSTED_PROXIES"),
        ({"AUTH_TRUSTED_PROXY_COUNT": "1"}, "AUTH_TRUSTED_PROXIES"),
        ({"AUTH_LOGIN_MAX_FAILURES_PER_USER": "5"}, "AUTH_LOGIN_USER_CEILING"),
        ({"AUTH_TRUSTED_PROXIES": "127.0.0.1,haproxy"}, "not an IP address"),
        ({"AUTH_TRUSTED_PROXIES": "10.0.0.0/33"}, "not an IP address"),
    ],
)
def test_refusals(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        AuthSettings.from_env(environ)


def test_trusted_proxies_are_addresses_and_networks() -> None:
    settings = AuthSettings.from_env({"AUTH_TRUSTED_PROXIES": " 127.0.0.2, 172.30.0.0/24 ,::1,, "})
    assert [str(n) for n in settings.trusted_proxies] == ["127.0.0.2/32", "172.30.0.0/24", "::1/128"]


def test_non_ed25519_and_garbage_keys_are_refused() -> None:
    ec_pem = _private_pem(generate_private_key(SECP256R1()))
    with pytest.raises(SettingsError, match="Ed25519"):
        build_token_service(AuthSettings.from_env({"AUTH_SIGNING_KEY": ec_pem}))
    with pytest.raises(SettingsError, match="PEM"):
        build_token_service(AuthSettings.from_env({"AUTH_SIGNING_KEY": "not a pem"}))


async def test_key_rotation_previous_public_key_still_verifies(
    tmp_path: Path, make_client: Any, register: Register
) -> None:
    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    key_file = tmp_path / "signing.pem"
    key_file.write_text(_private_pem(new))
    previous = tmp_path / "previous.pem"
    previous.write_text(_public_pem(old) + _public_pem(Ed25519PrivateKey.generate()))
    client = await make_client(
        AUTH_SIGNING_KEY_FILE=str(key_file), AUTH_PREVIOUS_PUBLIC_KEYS_FILE=str(previous)
    )

    jwks = await (await client.get("/.well-known/jwks.json")).json()
    kids = [k["kid"] for k in jwks["keys"]]
    assert kids[0] == key_id(new.public_key())
    assert key_id(old.public_key()) in kids and len(kids) == 3

    user = await register(on=client)
    now = int(time.time())
    claims = {
        "iss": "enterprise-chat-auth",
        "aud": "enterprise-chat",
        "sub": user["user_id"],
        "org": "TestOrg",
        "role": "user",
        "username": user["username"],
        "jti": "old-key-token",
        "iat": now,
        "nbf": now,
        "exp": now + 300,
    }
    old_token = jwt.encode(claims, old, algorithm="EdDSA", headers={"kid": key_id(old.public_key())})
    resp = await client.get("/me", headers={"Authorization": f"Bearer {old_token}"})
    assert resp.status == 200
    # New tokens are signed with the new key.
    login = await client.post("/login", json={"username": user["username"], "password": user["password"]})
    token = (await login.json())["access_token"]
    assert jwt.get_unverified_header(token)["kid"] == key_id(new.public_key())
