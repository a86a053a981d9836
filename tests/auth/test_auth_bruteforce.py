"""Failed-login throttling per username and per client address, and recovery after the window."""

from __future__ import annotations

import asyncio
import time
from typing import Any

Register = Any
Login = Any

WINDOW = "2"


async def _attempt(client: Any, username: str, password: str, **headers: str) -> Any:
    return await client.post("/login", json={"username": username, "password": password}, headers=headers)


async def _poll_until_login_works(client: Any, username: str, password: str, deadline: float) -> int:
    while True:
        resp = await _attempt(client, username, password)
        if resp.status != 429 or time.monotonic() > deadline:
            return int(resp.status)
        await asyncio.sleep(0.2)


async def test_username_lockout_answers_429_then_recovers(make_client: Any, register: Register) -> None:
    client = await make_client(AUTH_LOGIN_MAX_FAILURES_PER_USER="3", AUTH_LOGIN_FAILURE_WINDOW=WINDOW)
    user = await register(on=client)
    for _ in range(3):
        assert (await _attempt(client, user["username"], "wrong password")).status == 401

    locked = await _attempt(client, user["username"], user["password"])  # even the right password
    assert locked.status == 429
    assert (await locked.json())["error"] == "too_many_attempts"
    retry_after = int(locked.headers["Retry-After"])
    assert 1 <= retry_after <= 2
    assert locked.headers["X-Content-Type-Options"] == "nosniff"

    status = await _poll_until_login_works(client, user["username"], user["password"], time.monotonic() + 10)
    assert status == 200


async def test_success_resets_the_username_counter(make_client: Any, register: Register) -> None:
    client = await make_client(AUTH_LOGIN_MAX_FAILURES_PER_USER="3", AUTH_LOGIN_FAILURE_WINDOW="60")
    user = await register(on=client)
    for _ in range(2):
        assert (await _attempt(client, user["username"], "wrong password")).status == 401
    assert (await _attempt(client, user["username"], user["password"])).status == 200
    for _ in range(2):
        assert (await _attempt(client, user["username"], "wrong password")).status == 401
    assert (await _attempt(client, user["username"], user["password"])).status == 200


async def test_unknown_usernames_are_throttled_too(make_client: Any) -> None:
    client = await make_client(AUTH_LOGIN_MAX_FAILURES_PER_USER="2", AUTH_LOGIN_FAILURE_WINDOW="60")
    for _ in range(2):
        assert (await _attempt(client, "ghost_user", "whatever pw")).status == 401
    assert (await _attempt(client, "ghost_user", "whatever pw")).status == 429


async def test_address_lockout_uses_forwarded_for_only_when_trusted(
    make_client: Any, register: Register
) -> None:
    settings = {
        "AUTH_LOGIN_MAX_FAILURES_PER_USER": "100",
        "AUTH_LOGIN_MAX_FAILURES_PER_IP": "3",
        "AUTH_LOGIN_FAILURE_WINDOW": WINDOW,
    }
    trusted = await make_client(AUTH_TRUST_FORWARDED="true", **settings)
    user = await register(on=trusted)
    # Spraying different usernames from one client address (the proxy's last entry).
    attacker = {"X-Forwarded-For": "198.51.100.7"}
    for i in range(3):
        assert (await _attempt(trusted, f"victim_{i}", "guess pw 1", **attacker)).status == 401
    blocked = await _attempt(trusted, user["username"], user["password"], **attacker)
    assert blocked.status == 429
    assert int(blocked.headers["Retry-After"]) >= 1
    # Another client behind the same proxy is unaffected; a spoofed left-most entry does not help.
    other = await _attempt(trusted, user["username"], user["password"], **{"X-Forwarded-For": "203.0.113.9"})
    assert other.status == 200
    spoofed = {"X-Forwarded-For": "203.0.113.50, 198.51.100.7"}
    assert (await _attempt(trusted, user["username"], user["password"], **spoofed)).status == 429

    # Untrusted: the header is ignored and the peer address (127.0.0.1) is what counts.
    untrusted = await make_client(**settings)
    for i in range(3):
        varied = {"X-Forwarded-For": f"192.0.2.{i}"}
        assert (await _attempt(untrusted, f"victim_{i}", "guess pw 1", **varied)).status == 401
    assert (await _attempt(untrusted, user["username"], user["password"])).status == 429
