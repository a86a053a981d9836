"""Per-user rate limit (a sliding-window log in Redis, gateway/admission.py), shared by every gateway
instance."""

from __future__ import annotations

import asyncio
from typing import Any

from helpers import KeyPair, auth_header, wait_for


async def _chat(gateway: Any, token: str, i: int) -> Any:
    return await gateway.post(
        "/chat", json={"session_id": f"s{i}", "prompt": "hi", "stream": False}, headers=auth_header(token)
    )


async def test_101st_chat_in_a_minute_is_429_across_three_gateways(
    gateway_factory: Any, worker: Any, keys: KeyPair
) -> None:
    gateways = [await gateway_factory() for _ in range(3)]
    token = keys.mint("busy-user")
    responses = await asyncio.gather(*(_chat(gateways[i % 3], token, i) for i in range(100)))
    assert [r.status for r in responses] == [200] * 100
    assert {r.headers["RateLimit-Limit"] for r in responses} == {"100"}
    assert min(int(r.headers["RateLimit-Remaining"]) for r in responses) <= 1

    refused = await _chat(gateways[0], token, 100)
    assert refused.status == 429
    body = await refused.json()
    assert body["error"] == "rate_limited"
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.headers["RateLimit-Limit"] == "100"
    assert refused.headers["RateLimit-Remaining"] == "0"
    assert int(refused.headers["RateLimit-Reset"]) > 0

    # Another user is not affected.
    assert (await _chat(gateways[1], keys.mint("other-user"), 0)).status == 200


async def test_limit_recovers_as_requests_leave_the_window(
    gateway_factory: Any, worker: Any, keys: KeyPair
) -> None:
    gateway = await gateway_factory(RATE_LIMIT_PER_MINUTE="5", RATE_LIMIT_WINDOW_SECONDS="2")
    token = keys.mint("recovering")
    assert [(await _chat(gateway, token, i)).status for i in range(5)] == [200] * 5
    refused = await _chat(gateway, token, 5)
    assert refused.status == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 2

    async def one_passes() -> bool:
        return bool((await _chat(gateway, token, 6)).status == 200)

    await wait_for(one_passes, timeout=5, interval=0.2)


async def test_rate_limit_keys_use_the_seed_prefix_and_expire(
    gateway: Any, worker: Any, keys: KeyPair, redis: Any, namespace: str
) -> None:
    assert (await _chat(gateway, keys.mint("u1"), 0)).status == 200
    stored = [key async for key in redis.scan_iter(match=f"{namespace}:rate_limit:*")]
    assert stored == [f"{namespace}:rate_limit:{{u:u1}}".encode()]
    assert 0 < await redis.pttl(stored[0]) <= 60_000


async def test_org_limit_applies_to_all_users_of_an_org(
    gateway_factory: Any, worker: Any, keys: KeyPair
) -> None:
    gateway = await gateway_factory(RATE_LIMIT_ORG_PER_MINUTE="3")
    statuses = [(await _chat(gateway, keys.mint(f"member{i}", "acme"), i)).status for i in range(4)]
    assert statuses == [200, 200, 200, 429]
    assert (await _chat(gateway, keys.mint("outsider", "other-org"), 9)).status == 200


async def test_rate_limit_disabled_with_zero(gateway_factory: Any, worker: Any, keys: KeyPair) -> None:
    gateway = await gateway_factory(RATE_LIMIT_PER_MINUTE="0")
    token = keys.mint("unlimited")
    statuses = [(await _chat(gateway, token, i)).status for i in range(5)]
    assert statuses == [200] * 5
