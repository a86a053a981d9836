"""CORS: pre-flights answered without a token for allowed origins only; actual responses (streams
too) carry the headers; credentials never with ``*``."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import KeyPair, auth_header

from common.settings import Env, SettingsError
from gateway.cors import CorsPolicy

ALLOWED = "https://chat.example.com"
PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type, x-stainless-os",
}


async def test_preflight_from_an_allowed_origin_needs_no_token(gateway_factory: Any, keys: KeyPair) -> None:
    gateway = await gateway_factory(CORS_ALLOWED_ORIGINS=f"{ALLOWED}, https://other.example.com")
    for path in ("/v1/chat/completions", "/api/chat", "/chat"):
        response = await gateway.options(path, headers={"Origin": ALLOWED, **PREFLIGHT})
        assert response.status == 204, path
        assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
        assert "POST" in response.headers["Access-Control-Allow-Methods"]
        assert "x-stainless-os" in response.headers["Access-Control-Allow-Headers"]
        assert "Access-Control-Allow-Credentials" not in response.headers
        assert response.headers["Vary"] == "Origin"
    refused = await gateway.options(
        "/v1/chat/completions", headers={"Origin": "https://evil.example", **PREFLIGHT}
    )
    assert refused.status == 403
    assert not [name for name in refused.headers if name.lower().startswith("access-control-")]


async def test_actual_responses_carry_the_headers(gateway_factory: Any, worker: Any, keys: KeyPair) -> None:
    gateway = await gateway_factory(CORS_ALLOWED_ORIGINS=ALLOWED, CORS_ALLOW_CREDENTIALS="true")
    token = keys.mint("cors")
    body = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    stream = await gateway.post(
        "/v1/chat/completions", json=body, headers={"Origin": ALLOWED, **auth_header(token)}
    )
    assert stream.status == 200
    assert stream.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert stream.headers["Access-Control-Allow-Credentials"] == "true"
    assert "X-Request-ID" in stream.headers["Access-Control-Expose-Headers"]
    await stream.read()
    denied = await gateway.get("/v1/models", headers={"Origin": ALLOWED})
    assert denied.status == 401 and denied.headers["Access-Control-Allow-Origin"] == ALLOWED
    other = await gateway.get("/v1/models", headers={"Origin": "https://evil.example", **auth_header(token)})
    assert other.status == 200 and "Access-Control-Allow-Origin" not in other.headers


async def test_no_cors_by_default(gateway: Any) -> None:
    response = await gateway.options("/v1/models", headers={"Origin": ALLOWED, **PREFLIGHT})
    assert response.status == 403
    assert "Access-Control-Allow-Origin" not in response.headers


def test_any_origin_never_with_credentials() -> None:
    star = CorsPolicy.from_env(Env({"CORS_ALLOWED_ORIGINS": "*"}))
    assert star.headers("https://anything.example") == {"Access-Control-Allow-Origin": "*"}
    with pytest.raises(SettingsError):
        CorsPolicy.from_env(Env({"CORS_ALLOWED_ORIGINS": "*", "CORS_ALLOW_CREDENTIALS": "true"}))
