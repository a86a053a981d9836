"""Admission's rate-limit script against real Redis (single and cluster): the sliding-window edges.

Revocation and the disabled flag, checked by the same script, are covered in test_revocation.py.
Time is Redis's own (``TIME`` in the script); a test that needs "later" moves the recorded
request times back instead of sleeping, and reads ``TIME`` around a call to bound its answers.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from helpers import wait_for

from common.keyspace import Keyspace
from common.redis import RedisClient
from gateway.admission import LIMITED, OK, Admission, Verdict

WINDOW_MS = 60_000

AdmissionFactory = Callable[..., Admission]


@pytest.fixture
def keyspace(namespace: str) -> Keyspace:
    return Keyspace(f"{namespace}:")


@pytest.fixture
def admission_factory(redis: RedisClient, keyspace: Keyspace) -> AdmissionFactory:
    def make(
        *, user_limit: int = 3, org_limit: int = 0, window_seconds: float = WINDOW_MS / 1000
    ) -> Admission:
        return Admission(
            redis, keyspace, user_limit=user_limit, org_limit=org_limit, window_seconds=window_seconds
        )

    return make


async def spend(admission: Admission, user: str = "alice", org: str = "acme", cost: int = 1) -> Verdict:
    return await admission.admit(user, org, f"jti-{user}", cost=cost)


async def redis_ms(redis: RedisClient, key: str) -> int:
    """Redis ``TIME`` in ms, read on the node that holds ``key`` (the clock the script uses)."""
    seconds, micros = await redis.eval("local t = redis.call('TIME') return {t[1], t[2]}", 1, key)
    return int(seconds) * 1000 + int(micros) // 1000


async def logged(redis: RedisClient, key: str) -> list[tuple[bytes, int]]:
    """The admitted requests' ``(member, time in ms)``, oldest first."""
    return [(m, int(s)) for m, s in await redis.zrange(key, 0, -1, withscores=True)]


async def move_back(redis: RedisClient, key: str, members: list[bytes], ms: int) -> None:
    """Pretend these requests happened ``ms`` earlier."""
    scores = dict(await logged(redis, key))
    await redis.zadd(key, {m: scores[m] - ms for m in members}, xx=True)


async def test_exactly_the_limit_passes_then_requests_are_refused_without_spending(
    admission_factory: AdmissionFactory, redis: RedisClient, keyspace: Keyspace
) -> None:
    admission = admission_factory(user_limit=3)
    passed = [await spend(admission) for _ in range(3)]
    assert [(v.status, v.remaining, v.limit, v.scope) for v in passed] == [
        (OK, 2, 3, "user"),
        (OK, 1, 3, "user"),
        (OK, 0, 3, "user"),
    ]
    for _ in range(3):
        refused = await spend(admission)
        assert (refused.status, refused.remaining, refused.limit, refused.scope) == (LIMITED, 0, 3, "user")
        assert not refused.allowed
    assert await redis.zcard(keyspace.rate_limit("alice")) == 3, "a refused request is not counted"
    assert (await spend(admission, user="bob")).remaining == 2, "each user has a limit of their own"


async def test_a_limit_of_one(admission_factory: AdmissionFactory) -> None:
    admission = admission_factory(user_limit=1)
    assert (await spend(admission)).status == OK
    assert (await spend(admission)).status == LIMITED


async def test_cost_zero_checks_without_spending_and_passes_at_the_limit(
    admission_factory: AdmissionFactory, redis: RedisClient, keyspace: Keyspace
) -> None:
    admission = admission_factory(user_limit=2, org_limit=1)
    key = keyspace.rate_limit("alice")
    check = await spend(admission, cost=0)
    assert (check.status, check.remaining, check.reset) == (OK, 2, 0.0)
    assert not await redis.exists(key), "a check leaves no trace"

    await spend(admission)
    await spend(admission, user="carol")  # the org's one request
    check = await spend(admission, cost=0)
    assert (check.status, check.remaining, check.scope) == (OK, 1, "user"), "the org is not asked"
    assert (await spend(admission)).scope == "org"  # the org's budget is used up
    check = await spend(admission, cost=0)
    assert (check.status, check.remaining) == (OK, 1), "reads go on while chats are limited"
    assert await redis.zcard(key) == 1  # only the served request counts
    assert (await spend(admission, user="dave", cost=0)).status == OK


async def test_capacity_comes_back_as_the_oldest_requests_leave_the_window(
    admission_factory: AdmissionFactory, redis: RedisClient, keyspace: Keyspace
) -> None:
    admission = admission_factory(user_limit=3)
    key = keyspace.rate_limit("alice")
    for _ in range(3):
        await spend(admission)
    assert (await spend(admission)).status == LIMITED

    oldest = (await logged(redis, key))[0][0]
    await move_back(redis, key, [oldest], WINDOW_MS)  # the first request is now a window old
    back = await spend(admission)
    assert (back.status, back.remaining) == (OK, 0), "exactly one slot came back"
    assert (await spend(admission)).status == LIMITED
    assert oldest not in [m for m, _ in await logged(redis, key)], "the expired request was dropped"

    await move_back(redis, key, [m for m, _ in await logged(redis, key)], WINDOW_MS)
    assert [(await spend(admission)).status for _ in range(4)] == [OK, OK, OK, LIMITED]


async def test_a_request_just_inside_the_window_still_counts(
    admission_factory: AdmissionFactory, redis: RedisClient, keyspace: Keyspace
) -> None:
    admission = admission_factory(user_limit=1)
    key = keyspace.rate_limit("alice")
    await spend(admission)
    ((member, _),) = await logged(redis, key)
    # 5 s short of a window old: even a slow test run stays inside it.
    await move_back(redis, key, [member], WINDOW_MS - 5_000)
    assert (await spend(admission)).status == LIMITED


async def test_a_limited_user_recovers_when_the_window_passes(
    admission_factory: AdmissionFactory, redis: RedisClient, keyspace: Keyspace
) -> None:
    admission = admission_factory(user_limit=2, window_seconds=0.3)
    await spend(admission)
    await spend(admission)
    refused = await spend(admission)
    assert refused.status == LIMITED
    assert 0 < refused.retry_after <= 0.3
    ttl = await redis.pttl(keyspace.rate_limit("alice"))
    assert ttl == -2 or 0 < ttl <= 300, "the key expires with the window (-2: it already has)"

    async def passes() -> bool:
        return (await spend(admission)).status == OK

    await wait_for(passes, timeout=10, interval=0.05)


async def test_retry_after_and_reset_say_when_the_oldest_request_leaves(
    admission_factory: AdmissionFactory, redis: RedisClient, keyspace: Keyspace
) -> None:
    admission = admission_factory(user_limit=2)
    key = keyspace.rate_limit("alice")
    first = await spend(admission)
    assert first.reset == WINDOW_MS / 1000, "the first request leaves exactly one window later"
    assert "Retry-After" not in first.headers()

    before = await redis_ms(redis, key)
    second = await spend(admission)
    after = await redis_ms(redis, key)
    oldest_at = (await logged(redis, key))[0][1]
    assert oldest_at + WINDOW_MS - after <= second.reset * 1000 <= oldest_at + WINDOW_MS - before

    # Let the oldest request leave in about 1.5 s; the refusal says so, in both fields.
    ((oldest, _), _) = await logged(redis, key)
    await move_back(redis, key, [oldest], WINDOW_MS - 1_500)
    oldest_at = (await logged(redis, key))[0][1]
    before = await redis_ms(redis, key)
    refused = await spend(admission)
    after = await redis_ms(redis, key)
    assert refused.status == LIMITED
    retry_ms = round(refused.retry_after * 1000)
    assert oldest_at + WINDOW_MS - after <= retry_ms <= oldest_at + WINDOW_MS - before
    assert refused.reset == refused.retry_after
    assert refused.headers() == {
        "RateLimit-Limit": "2",
        "RateLimit-Remaining": "0",
        "RateLimit-Reset": str(math.ceil(refused.reset)),
        "Retry-After": str(math.ceil(refused.retry_after)),
    }


@pytest.mark.parametrize("limit", [0, -1])
async def test_a_limit_of_zero_or_less_disables_limiting(
    admission_factory: AdmissionFactory, redis: RedisClient, keyspace: Keyspace, limit: int
) -> None:
    admission = admission_factory(user_limit=limit, org_limit=limit)
    verdicts = [await spend(admission) for _ in range(5)]
    assert {(v.status, v.remaining) for v in verdicts} == {(OK, -1)}
    assert verdicts[0].headers() == {}, "no RateLimit headers when there is no limit"
    assert not await redis.exists(keyspace.rate_limit("alice"), keyspace.rate_limit_org("acme"))


async def test_the_org_limit_is_shared_by_its_users(
    admission_factory: AdmissionFactory, redis: RedisClient, keyspace: Keyspace
) -> None:
    admission = admission_factory(user_limit=10, org_limit=2)
    first = await spend(admission, user="m0")
    assert (first.status, first.scope, first.limit, first.remaining) == (OK, "user", 10, 9)
    assert (await spend(admission, user="m1")).status == OK

    refused = await spend(admission, user="m2")
    assert (refused.status, refused.scope, refused.limit, refused.remaining) == (LIMITED, "org", 2, 0)
    assert refused.retry_after > 0
    assert refused.headers()["RateLimit-Limit"] == "2"
    assert await redis.zcard(keyspace.rate_limit_org("acme")) == 2

    assert (await spend(admission, user="o0", org="other")).status == OK, "another org is not affected"
    assert (await spend(admission, user="lone", org="")).status == OK, "no org: no org limit"


async def test_a_user_refused_by_their_own_limit_spends_nothing_of_the_org(
    admission_factory: AdmissionFactory, redis: RedisClient, keyspace: Keyspace
) -> None:
    admission = admission_factory(user_limit=1, org_limit=5)
    await spend(admission)
    assert (await spend(admission)).scope == "user"
    assert await redis.zcard(keyspace.rate_limit_org("acme")) == 1


async def test_a_request_refused_by_the_org_limit_spends_nothing_of_the_user(
    admission_factory: AdmissionFactory, redis: RedisClient, keyspace: Keyspace
) -> None:
    admission = admission_factory(user_limit=2, org_limit=1)
    assert (await spend(admission, user="alice")).status == OK
    for _ in range(2):
        assert (await spend(admission, user="bob")).scope == "org"
    assert await redis.zcard(keyspace.rate_limit("bob")) == 0
    # Without the org limit, bob has his whole own budget: none of his requests was served.
    relaxed = admission_factory(user_limit=2, org_limit=0)
    assert [(await spend(relaxed, user="bob")).status for _ in range(2)] == [OK, OK]


def test_headers_round_seconds_up_and_never_ask_to_retry_at_once() -> None:
    limited = Verdict(status=LIMITED, limit=5, remaining=0, retry_after=0.001, reset=59.001)
    assert limited.headers() == {
        "RateLimit-Limit": "5",
        "RateLimit-Remaining": "0",
        "RateLimit-Reset": "60",
        "Retry-After": "1",
    }
    allowed = Verdict(status=OK, limit=5, remaining=4, retry_after=0, reset=0)
    assert allowed.headers() == {"RateLimit-Limit": "5", "RateLimit-Remaining": "4", "RateLimit-Reset": "0"}
