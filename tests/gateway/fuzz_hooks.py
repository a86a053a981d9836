"""Schemathesis hooks for the API fuzz run (loaded by the CLI through ``SCHEMATHESIS_HOOKS``).

- Authentication, so that requests reach the handlers behind the bearer check. Against the
  gateway: tokens minted with the signing key (``FUZZ_SIGNING_KEY``) for a user the auth service
  does not list, so the admin operations of the auth run cannot disable it. Against the auth
  service: a real login (``FUZZ_AUTH_URL``) as the admin, who may call every operation and cannot
  disable or demote itself. Tokens are cached and fetched again after a 401 (the fuzzer itself
  calls ``/logout`` and ``/logout/all``). Logins carry their own ``X-Forwarded-For`` (auth trusts
  it from 127.0.0.1, as from HAProxy), so the fuzzer's failed logins, throttled per client
  address, never lock the token source out.
- ``error_shape``: every 4xx/5xx is JSON ``{"error": str, "message": str}``; under ``/v1/`` it is
  OpenAI's ``{"error": {"message", "type", "param", "code"}}``, under ``/api/`` Ollama's
  ``{"error": str}`` with our ``code``.
- NDJSON (Ollama's streams): every line must be JSON; the last one is checked against the schema.
- ``HandlersReached``: every authenticated operation answered at least once with something other
  than an authentication failure, so the run tested the handlers, not only the bearer check.
"""

from __future__ import annotations

import json
import os
from typing import Any

import requests
import schemathesis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from helpers import KeyPair

AUTH_FAILURES = frozenset({"missing_token", "invalid_token", "token_expired", "token_revoked"})


def _minted_token() -> str:
    private = serialization.load_pem_private_key(os.environ["FUZZ_SIGNING_KEY"].encode(), password=None)
    assert isinstance(private, ed25519.Ed25519PrivateKey)
    keys = KeyPair(private, public_pem="")
    return keys.mint(os.environ["FUZZ_USER_ID"], os.environ["FUZZ_ORG_ID"], ttl=3600)


def _login_token() -> str:
    response = requests.post(
        f"{os.environ['FUZZ_AUTH_URL']}/login",
        json={"username": os.environ["FUZZ_USERNAME"], "password": os.environ["FUZZ_PASSWORD"]},
        headers={"X-Forwarded-For": os.environ.get("FUZZ_FORWARDED_FOR", "192.0.2.10")},
        timeout=10,
    )
    if response.status_code != 200:
        raise RuntimeError(f"fuzz login failed: {response.status_code} {response.text}")
    token: str = response.json()["access_token"]
    return token


@schemathesis.auth(refresh_interval=600)
class Token:
    """A bearer token for every request; fetched again when a request gets 401."""

    def get(self, case: Any, ctx: Any) -> str:
        return _minted_token() if "FUZZ_SIGNING_KEY" in os.environ else _login_token()

    def set(self, case: Any, data: str, ctx: Any) -> None:
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"


def _header(response: Any, name: str) -> str:
    values = response.headers.get(name.lower()) or [""]
    return str(values[0])


@schemathesis.deserializer("application/x-ndjson")
def ndjson(ctx: Any, response: Any) -> Any:
    """Each line one JSON document (a line that is not fails the run); the last stands for all."""
    lines = [json.loads(line) for line in response.content.splitlines() if line.strip()]
    return lines[-1] if lines else None


@schemathesis.check
def error_shape(ctx: Any, response: Any, case: Any) -> bool | None:
    """Errors are JSON in the API's one error shape (OpenAI's under /v1/)."""
    if response.status_code < 400:
        return None
    content_type = _header(response, "content-type").split(";")[0].strip()
    if content_type != "application/json":
        raise AssertionError(f"{response.status_code} error with Content-Type {content_type!r}, not JSON")
    try:
        body = json.loads(response.content)
    except ValueError:
        raise AssertionError(
            f"{response.status_code} error body is not JSON: {response.content[:200]!r}"
        ) from None
    if not isinstance(body, dict):
        raise AssertionError(f"{response.status_code} error body is not an object: {body!r}")
    if case.operation.path.startswith("/api/"):
        if not (isinstance(body.get("error"), str) and isinstance(body.get("code"), str)):
            shape = '{"error": str, "code": str}'
            raise AssertionError(f"{response.status_code} error is not Ollama's {shape}: {body!r}")
        return True
    if case.operation.path.startswith("/v1/"):
        detail = body.get("error")
        if not (
            isinstance(detail, dict)
            and isinstance(detail.get("message"), str)
            and isinstance(detail.get("type"), str)
            and "param" in detail
            and isinstance(detail.get("code"), str)
        ):
            raise AssertionError(f"{response.status_code} error is not in OpenAI's shape: {body!r}")
        return True
    if not (isinstance(body.get("error"), str) and isinstance(body.get("message"), str)):
        shape = '{"error": str, "message": str}'
        raise AssertionError(f"{response.status_code} error is not {shape}: {body!r}")
    return True


def _auth_failure(response: Any) -> bool:
    if response.status_code != 401:
        return False
    try:
        body = json.loads(response.content)
    except ValueError:
        return True
    code = body.get("error") if isinstance(body, dict) else None
    if isinstance(code, dict):  # OpenAI's shape
        code = code.get("code")
    return code in AUTH_FAILURES


@schemathesis.check
class HandlersReached:
    """Every authenticated operation got past the bearer check at least once."""

    def __init__(self) -> None:
        self.tested: set[str] = set()
        self.reached: set[str] = set()

    def after_response(self, ctx: Any, response: Any, case: Any) -> None:
        if case.operation.definition.raw.get("security") == []:
            return
        label = case.operation.label
        self.tested.add(label)
        if not _auth_failure(response):
            self.reached.add(label)

    def after_run(self, ctx: Any) -> None:
        missed = sorted(self.tested - self.reached)
        if missed:
            raise AssertionError(f"only authentication failures from: {', '.join(missed)}")
