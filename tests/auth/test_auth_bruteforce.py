"""Login throttling that cannot be aimed at a victim (per user+address back-off, per-address budget,
per-username ceiling sparing known addresses), the registration throttle, and whose address counts.

The test client connects from 127.0.0.1; with ``AUTH_TRUSTED_PROXIES=127.0.0.1`` the test plays
HAProxy and chooses each request's client address with ``X-Forwarded-For``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from auth.bruteforce import MAX_IN_FLIGHT, address_subject
from common.keyspace import Keyspace

Register = Any
Login = Any

AS_PROXY = {"AUTH_TRUSTED_PROXIES": "127.0.0.1"}
ATTACKER = {"X-Forwarded-For": "198.51.100.66"}
OWNER = {"X-Forwarded-For": "203.0.113.10"}


def _from(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


async def _attempt(client: Any, username: str, password: str, headers: dict[str, str] | None = None) -> Any:
    return await client.post("/login", json={"username": username, "password": password}, headers=headers)


async def _assert_throttled(resp: Any, code: str = "too_many_attempts") -> int:
    assert resp.status == 429, await resp.text()
    body = await resp.json()
    assert body["error"] == code and body["message"]
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    return int(resp.headers["Retry-After"])


async def test_attacker_elsewhere_cannot_lock_out_the_owner(make_client: Any, register: Register) -> None:
    client = await make_client(AUTH_LOGIN_BACKOFF_BASE="30", **AS_PROXY)
    user = await register(on=client)
    statuses = [(await _attempt(client, user["username"], f"guess {i}", ATTACKER)).status for i in range(50)]
    assert set(statuses) <= {401, 429}
    # Back-off: the 3 free failures and the one that starts the back-off, then waits.
    assert statuses.count(401) == 4 and statuses[4:] == [429] * 46

    owner = await _attempt(client, user["username"], user["password"], OWNER)
    assert owner.status == 200, await owner.text()
    # The attacker's own pair still waits, even with the right password.
    await _assert_throttled(await _attempt(client, user["username"], user["password"], ATTACKER))


async def test_backoff_per_user_and_address_grows_exponentially(
    make_client: Any, register: Register, auth_redis: Any, auth_prefix: str
) -> None:
    client = await make_client(AUTH_LOGIN_FREE_FAILURES="1", AUTH_LOGIN_BACKOFF_BASE="1", **AS_PROXY)
    user = await register(on=client)
    name = user["username"]
    assert (await _attempt(client, name, "wrong one", ATTACKER)).status == 401  # free
    waits = []
    for _ in range(3):
        assert (await _attempt(client, name, "wrong one", ATTACKER)).status == 401
        wait = await _assert_throttled(await _attempt(client, name, user["password"], ATTACKER))
        waits.append(wait)
        await asyncio.sleep(wait + 0.1)
    assert waits == [1, 2, 4]
    pair = Keyspace(auth_prefix).login_failures_pair(name.lower(), "198.51.100.66")
    assert int(await auth_redis.hget(pair, "n")) == 4
    assert await auth_redis.pttl(pair) > 0  # every throttle key expires
    # Once the wait is over the right password works, and success clears the pair.
    assert (await _attempt(client, name, user["password"], ATTACKER)).status == 200
    assert not await auth_redis.exists(pair)


async def test_backoff_is_capped(make_client: Any, register: Register) -> None:
    client = await make_client(
        AUTH_LOGIN_FREE_FAILURES="0", AUTH_LOGIN_BACKOFF_BASE="1", AUTH_LOGIN_BACKOFF_MAX="1", **AS_PROXY
    )
    user = await register(on=client)
    for _ in range(3):
        assert (await _attempt(client, user["username"], "wrong one", ATTACKER)).status == 401
        assert await _assert_throttled(await _attempt(client, user["username"], "x", ATTACKER)) == 1
        await asyncio.sleep(1.1)


async def test_parallel_guesses_cannot_outrun_the_backoff(make_client: Any, register: Register) -> None:
    """A burst gets at most MAX_IN_FLIGHT checks (plus the free failures) before the back-off."""
    client = await make_client(AUTH_LOGIN_FREE_FAILURES="3", AUTH_LOGIN_BACKOFF_BASE="30", **AS_PROXY)
    user = await register(on=client)
    responses = await asyncio.gather(
        *(_attempt(client, user["username"], f"guess {i}", ATTACKER) for i in range(60))
    )
    statuses = [r.status for r in responses]
    assert set(statuses) == {401, 429}
    assert 4 <= statuses.count(401) <= MAX_IN_FLIGHT + 3
    await _assert_throttled(await _attempt(client, user["username"], user["password"], ATTACKER))


async def test_parallel_logins_with_the_right_password_all_pass(make_client: Any, register: Register) -> None:
    client = await make_client(AUTH_LOGIN_FREE_FAILURES="1", **AS_PROXY)
    user = await register(on=client)
    # 20: below the address budget (30), which counts attempts in flight too.
    responses = await asyncio.gather(
        *(_attempt(client, user["username"], user["password"], OWNER) for _ in range(20))
    )
    assert [r.status for r in responses] == [200] * 20


async def test_per_address_budget_spans_usernames(make_client: Any, register: Register) -> None:
    client = await make_client(AUTH_LOGIN_MAX_FAILURES_PER_IP="5", AUTH_LOGIN_FREE_FAILURES="100", **AS_PROXY)
    user = await register(on=client)
    # Spraying: one guess for each of many usernames from one address.
    for i in range(5):
        assert (await _attempt(client, f"victim_{i}", "Summer2024!", ATTACKER)).status == 401
    retry_after = await _assert_throttled(
        await _attempt(client, user["username"], user["password"], ATTACKER)
    )
    assert 1 <= retry_after <= 900
    # Another address is not affected.
    assert (await _attempt(client, user["username"], user["password"], OWNER)).status == 200


async def test_successful_logins_do_not_spend_the_address_budget(
    make_client: Any, register: Register
) -> None:
    client = await make_client(AUTH_LOGIN_MAX_FAILURES_PER_IP="3", AUTH_LOGIN_FREE_FAILURES="100", **AS_PROXY)
    office = _from("192.0.2.44")
    user = await register(on=client)
    assert (await _attempt(client, "someone_else", "wrong one", office)).status == 401
    for _ in range(6):
        assert (await _attempt(client, user["username"], user["password"], office)).status == 200
    for _ in range(2):
        assert (await _attempt(client, "someone_else", "wrong one", office)).status == 401
    await _assert_throttled(await _attempt(client, user["username"], user["password"], office))


async def test_username_ceiling_spares_addresses_the_owner_logged_in_from(
    make_client: Any, register: Register, login: Login
) -> None:
    client = await make_client(
        AUTH_LOGIN_USER_CEILING="5",
        AUTH_LOGIN_FREE_FAILURES="100",
        AUTH_LOGIN_MAX_FAILURES_PER_IP="100",
        **AS_PROXY,
    )
    user = await register(on=client)
    await login(user["username"], user["password"], on=client, headers=OWNER)  # a known address
    # A distributed attack: one guess from each of many addresses reaches the ceiling.
    for i in range(5):
        assert (await _attempt(client, user["username"], "wrong one", _from(f"198.51.100.{i}"))).status == 401
    # A new address now waits, even with the right password ...
    await _assert_throttled(await _attempt(client, user["username"], user["password"], _from("192.0.2.7")))
    # ... but the owner, from an address they logged in from before, is not locked out.
    assert (await _attempt(client, user["username"], user["password"], OWNER)).status == 200


async def test_unknown_usernames_are_throttled_like_known_ones(make_client: Any, register: Register) -> None:
    client = await make_client(AUTH_LOGIN_FREE_FAILURES="2", AUTH_LOGIN_BACKOFF_BASE="30", **AS_PROXY)
    user = await register(on=client)
    known = [(await _attempt(client, user["username"], "wrong one", ATTACKER)).status for _ in range(5)]
    ghost = [(await _attempt(client, "ghost_user", "wrong one", ATTACKER)).status for _ in range(5)]
    assert known == ghost == [401, 401, 401, 429, 429]


async def test_forwarded_for_counts_only_from_a_trusted_proxy(make_client: Any, register: Register) -> None:
    settings = {"AUTH_LOGIN_MAX_FAILURES_PER_IP": "3", "AUTH_LOGIN_FREE_FAILURES": "100"}
    # The peer (127.0.0.1) is not a trusted proxy: X-Forwarded-For is ignored, every attempt is
    # 127.0.0.1's, so varying the header does not escape the budget.
    untrusted = await make_client(AUTH_TRUSTED_PROXIES="10.0.0.0/8", **settings)
    user = await register(on=untrusted)
    for i in range(3):
        assert (await _attempt(untrusted, f"victim_{i}", "guess one", _from(f"192.0.2.{i}"))).status == 401
    await _assert_throttled(
        await _attempt(untrusted, user["username"], user["password"], _from("192.0.2.99"))
    )

    # Trusted: each forwarded address has its own budget; a spoofed left-most entry does not help.
    trusted = await make_client(**AS_PROXY, **settings)
    for i in range(3):
        assert (await _attempt(trusted, f"victim_{i}", "guess one", ATTACKER)).status == 401
    await _assert_throttled(await _attempt(trusted, user["username"], user["password"], ATTACKER))
    spoofed = _from("203.0.113.50, 198.51.100.66")
    await _assert_throttled(await _attempt(trusted, user["username"], user["password"], spoofed))
    assert (await _attempt(trusted, user["username"], user["password"], OWNER)).status == 200


def test_ipv6_clients_are_grouped_by_64_prefix() -> None:
    assert (
        address_subject("2001:db8:1:2::1") == address_subject("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    )
    assert address_subject("2001:db8:1:3::1") != address_subject("2001:db8:1:2::1")
    assert address_subject("::ffff:198.51.100.7") == "198.51.100.7"
    assert address_subject("198.51.100.7") == "198.51.100.7"


async def test_registration_is_throttled_per_address(make_client: Any, register: Register) -> None:
    client = await make_client(AUTH_REGISTER_MAX_PER_IP="2", AUTH_REGISTER_WINDOW="2", **AS_PROXY)
    await register(on=client, headers=ATTACKER)
    bad = {"username": "x", "password": "testpass123", "email": "e@x.com", "organization": "o"}
    assert (await client.post("/register", json=bad, headers=ATTACKER)).status == 400  # attempts count
    late = {"username": "late_user", "password": "testpass123", "email": "late@x.com", "organization": "Late"}
    refused = await client.post("/register", json=late, headers=ATTACKER)
    assert 1 <= await _assert_throttled(refused, "registration_throttled") <= 2
    await register(on=client, headers=OWNER)  # another address is not affected
    deadline = time.monotonic() + 10
    while True:  # the window ends
        resp = await client.post("/register", json=late, headers=ATTACKER)
        if resp.status != 429 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert resp.status == 201, await resp.text()
