"""Bad input and bad tokens get clear JSON errors, never a 500."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from helpers import KeyPair, auth_header


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "malformed_json"),
        (b"", 400, "malformed_json"),
        (b"[]", 400, "invalid_request"),
        (b'{"prompt": "hi"}', 400, "invalid_request"),
        (b'{"session_id": "s"}', 400, "invalid_request"),
        (b'{"session_id": 5, "prompt": "hi"}', 400, "invalid_request"),
        (b'{"session_id": "s", "prompt": ["hi"]}', 400, "invalid_request"),
        (b'{"session_id": "s", "prompt": "hi", "stream": "yes"}', 400, "invalid_request"),
        (b'{"session_id": "s", "prompt": "hi", "unexpected": 1}', 400, "unsupported_parameter"),
        (b'{"session_id": "s", "prompt": ""}', 400, "empty_prompt"),
        (b'{"session_id": "s", "prompt": "  \\u0000\\u0007  "}', 400, "empty_prompt"),
        (b'{"session_id": "../etc/passwd", "prompt": "hi"}', 400, "invalid_session_id"),
        (b'{"session_id": "", "prompt": "hi"}', 400, "invalid_session_id"),
        (b'{"session_id": "s p a c e", "prompt": "hi"}', 400, "invalid_session_id"),
        (b'{"session_id": "s", "prompt": "hi", "model": "bad model!"}', 400, "invalid_model"),
    ],
)
async def test_malformed_requests_get_json_errors(
    gateway: Any, keys: KeyPair, body: bytes, status: int, code: str
) -> None:
    response = await gateway.post(
        "/chat", data=body, headers={**auth_header(keys.mint("u")), "Content-Type": "application/json"}
    )
    assert response.status == status
    payload = await response.json()
    assert payload["error"] == code
    assert payload["message"]


async def test_oversized_prompt_is_413(gateway_factory: Any, keys: KeyPair) -> None:
    gateway = await gateway_factory(PROMPT_MAX_CHARS="100")
    response = await gateway.post(
        "/chat", json={"session_id": "s", "prompt": "x" * 101}, headers=auth_header(keys.mint("u"))
    )
    assert response.status == 413
    assert (await response.json())["error"] == "prompt_too_long"


async def test_oversized_body_is_413(gateway_factory: Any, keys: KeyPair) -> None:
    gateway = await gateway_factory(MAX_BODY_BYTES="2048")
    response = await gateway.post(
        "/chat", json={"session_id": "s", "prompt": "x" * 5000}, headers=auth_header(keys.mint("u"))
    )
    assert response.status == 413
    assert (await response.json())["error"] == "body_too_large"


async def test_unknown_model_is_400_when_models_are_listed(gateway_factory: Any, keys: KeyPair) -> None:
    gateway = await gateway_factory(ALLOWED_MODELS="llama3.2,qwen2.5")
    response = await gateway.post(
        "/chat",
        json={"session_id": "s", "prompt": "hi", "model": "gpt-9"},
        headers=auth_header(keys.mint("u")),
    )
    assert response.status == 400
    assert (await response.json())["error"] == "unknown_model"


def _other_key_token() -> str:
    other = ed25519.Ed25519PrivateKey.generate()
    now = time.time()
    claims = {
        "sub": "u",
        "iss": "enterprise-chat-auth",
        "aud": "enterprise-chat",
        "iat": now,
        "exp": now + 60,
        "jti": "x",
    }
    return jwt.encode(claims, other, algorithm="EdDSA")


@pytest.mark.parametrize(
    ("make_headers", "code"),
    [
        (lambda keys: {}, "missing_token"),
        (lambda keys: {"Authorization": "Basic dXNlcjpwYXNz"}, "missing_token"),
        (lambda keys: {"Authorization": "Bearer "}, "missing_token"),
        (lambda keys: auth_header("not.a.jwt"), "invalid_token"),
        (lambda keys: auth_header(_other_key_token()), "invalid_token"),
        (lambda keys: auth_header(keys.mint("u", ttl=-60)), "token_expired"),
        (lambda keys: auth_header(keys.mint("u", nbf=int(time.time()) + 600)), "token_not_yet_valid"),
        (lambda keys: auth_header(keys.mint("u", aud="someone-else")), "invalid_token"),
        (lambda keys: auth_header(keys.mint("u", iss="evil")), "invalid_token"),
    ],
)
async def test_bad_tokens_are_401(gateway: Any, keys: KeyPair, make_headers: Any, code: str) -> None:
    response = await gateway.post(
        "/chat", json={"session_id": "s", "prompt": "hi"}, headers=make_headers(keys)
    )
    assert response.status == 401
    assert (await response.json())["error"] == code
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_health_ready_metrics_need_no_token(gateway: Any) -> None:
    assert (await gateway.get("/health")).status == 200
    ready = await gateway.get("/ready")
    assert ready.status == 200
    assert (await ready.json())["status"] == "ready"
    metrics = await gateway.get("/metrics")
    assert "chat_requests_total" in await metrics.text()


async def test_unknown_path_is_json_404(gateway: Any, keys: KeyPair) -> None:
    response = await gateway.get("/nope", headers=auth_header(keys.mint("u")))
    assert response.status == 404
    assert (await response.json())["error"] == "not_found"
