"""Admission of an authenticated request, in one Redis round trip per scope.

One Lua script checks the token's denylist entry and the user's disabled flag and applies the
per-user rate limit. All three keys share the user's hash tag, so the script runs in one Redis
Cluster slot. The optional per-organization limit is a second call on the org's own key.

The limit is a sliding-window log: a sorted set of the admitted requests' times, so at most
``limit`` requests pass in *any* window of ``window`` seconds. Fixed windows would let twice the
limit through around a window boundary, and GCRA lets a full burst through again right after a
burst; both break "100 per minute" as users read it. ``now`` comes from Redis ``TIME``, so gateway
clocks do not matter. Capacity comes back as the oldest requests leave the window.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass

from common.keyspace import Keyspace
from common.redis import RedisClient

# KEYS[1] rate key (sorted set), KEYS[2] disabled flag (or absent), KEYS[3] revoked jti (or absent)
# ARGV[1] limit, ARGV[2] window in ms, ARGV[3] cost (0: only check), ARGV[4] unique member id
# Returns {verdict, remaining, retry_after_ms, reset_ms}; verdict 0 ok, 1 limited, 2 disabled, 3 revoked
_ADMIT = """
if KEYS[3] and redis.call('EXISTS', KEYS[3]) == 1 then return {3, 0, 0, 0} end
if KEYS[2] and redis.call('EXISTS', KEYS[2]) == 1 then return {2, 0, 0, 0} end
local limit, window, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if limit <= 0 then return {0, -1, 0, 0} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local used = redis.call('ZCARD', KEYS[1])
local reset = 0
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if oldest[2] then reset = tonumber(oldest[2]) + window - now end
if used + cost > limit then
  return {1, math.max(limit - used, 0), math.max(reset, 1), math.max(reset, 1)}
end
if cost > 0 then
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], window)
  if reset == 0 then reset = window end
end
return {0, limit - used - cost, 0, reset}
"""

OK, LIMITED, DISABLED, REVOKED = 0, 1, 2, 3


@dataclass(frozen=True, slots=True)
class Verdict:
    status: int
    limit: int
    remaining: int
    retry_after: float  # seconds until the next request would pass (when limited)
    reset: float  # seconds until the oldest counted request leaves the window
    scope: str = "user"

    @property
    def allowed(self) -> bool:
        return self.status == OK

    def headers(self) -> dict[str, str]:
        """IETF RateLimit headers (and Retry-After when limited)."""
        if self.limit <= 0:
            return {}
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(math.ceil(self.reset)),
        }
        if self.status == LIMITED:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        return headers


class Admission:
    def __init__(
        self,
        redis: RedisClient,
        keys: Keyspace,
        *,
        user_limit: int,
        org_limit: int = 0,
        window_seconds: float = 60.0,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._user_limit = user_limit
        self._org_limit = org_limit
        self._window_ms = int(window_seconds * 1000)
        self._script = redis.register_script(_ADMIT)

    async def admit(self, user_id: str, org_id: str, jti: str, *, cost: int) -> Verdict:
        """Check revocation and the disabled flag; spend ``cost`` from the limits (0: check only)."""
        user = await self._run(
            [
                self._keys.rate_limit(user_id),
                self._keys.disabled_user(user_id),
                self._keys.revoked_jti(user_id, jti),
            ],
            self._user_limit,
            cost,
            "user",
            jti,
        )
        if not user.allowed or cost == 0 or self._org_limit <= 0 or not org_id:
            return user
        org = await self._run([self._keys.rate_limit_org(org_id)], self._org_limit, cost, "org", jti)
        return org if not org.allowed else user

    async def _run(self, keys: list[str], limit: int, cost: int, scope: str, token_id: str) -> Verdict:
        member = f"{token_id}:{uuid.uuid4().hex[:12]}"
        status, remaining, retry_ms, reset_ms = await self._script(
            keys=keys, args=[limit, self._window_ms, cost, member]
        )
        return Verdict(
            status=int(status),
            limit=limit,
            remaining=int(remaining),
            retry_after=int(retry_ms) / 1000,
            reset=int(reset_ms) / 1000,
            scope=scope,
        )
