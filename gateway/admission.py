"""Admission of an authenticated request, in one Redis round trip per scope.

One Lua script checks that the token is still honoured (the user's disabled flag, and the
token's revocation by itself, by its login ``sid`` or by the user's token generation: the rule of
common/revocation.py) and applies the per-user rate limit. All keys share the user's hash tag, so
the script runs in one Redis Cluster slot. The optional per-organization limit is a second call
on the org's own key.

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
from common.revocation import DISABLED, LUA_TOKEN_STATUS, REVOKED, status_keys

__all__ = ["DISABLED", "LIMITED", "OK", "REVOKED", "Admission", "Verdict"]

# KEYS[1] rate key (sorted set); KEYS[2..5] (absent for the org call) as common.revocation's
# status_keys: disabled flag, revoked jti, revoked sid, token generation.
# ARGV[1] limit, ARGV[2] window in ms, ARGV[3] cost (0: only check), ARGV[4] member id, unique per call
# (so a repeated call is recognised), ARGV[5] the token's generation.
# Optional KEYS[6], ARGV[6]: an admitted request's record (common/exchanges.py) is opened as
# pending for ARGV[6] seconds, in this same round trip, so a resume can find it.
# Returns {verdict, remaining, retry_after_ms, reset_ms}; verdict 0 ok, 1 limited, 2 disabled, 3 revoked
_ADMIT = (
    LUA_TOKEN_STATUS
    + """
local status = token_status(KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[5])
if status ~= 0 then return {status, 0, 0, 0} end
local function open_record()
  if KEYS[6] and redis.call('EXISTS', KEYS[6]) == 0 then
    redis.call('HSET', KEYS[6], 'state', 'pending')
    redis.call('EXPIRE', KEYS[6], tonumber(ARGV[6]))
  end
end
local limit, window, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if limit <= 0 then
  open_record()
  return {0, -1, 0, 0}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local used = redis.call('ZCARD', KEYS[1])
local reset = 0
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if oldest[2] then reset = tonumber(oldest[2]) + window - now end
if cost > 0 and redis.call('ZSCORE', KEYS[1], ARGV[4]) then
  -- This very call ran already (repeated after a connection error, common/redis.py): admitted.
  return {0, math.max(limit - used, 0), 0, math.max(reset, 1)}
end
if used + cost > limit then
  return {1, math.max(limit - used, 0), math.max(reset, 1), math.max(reset, 1)}
end
if cost > 0 then
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], window)
  if reset == 0 then reset = window end
end
open_record()
return {0, limit - used - cost, 0, reset}
"""
)

OK, LIMITED = 0, 1


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

    async def admit(
        self,
        user_id: str,
        org_id: str,
        jti: str,
        *,
        cost: int,
        sid: str = "",
        generation: int = 0,
        record: tuple[str, int] | None = None,
    ) -> Verdict:
        """Check the token is still honoured (disabled user; token, login ``sid`` or user-wide
        revocation via ``generation``); spend ``cost`` from the limits (0: check only); when
        admitted, open ``record`` (its request id, seconds to live) as pending."""
        member = f"{jti}:{uuid.uuid4().hex[:12]}"
        user_key = self._keys.rate_limit(user_id)
        keys = [user_key, *status_keys(self._keys, user_id, jti, sid)]
        if record is not None:
            keys.append(self._keys.chat_record(user_id, record[0]))
        user = await self._run(keys, self._user_limit, cost, "user", member, generation, record)
        if not user.allowed or cost == 0 or self._org_limit <= 0 or not org_id:
            return user
        org = await self._run([self._keys.rate_limit_org(org_id)], self._org_limit, cost, "org", member)
        if org.allowed:
            return user
        if self._user_limit > 0:
            # Refused for the organization: the request was not served, so it spends nothing of
            # the user's own limit (the two keys live in different slots: no single script).
            await self._redis.zrem(user_key, member)
        return org

    async def _run(
        self,
        keys: list[str],
        limit: int,
        cost: int,
        scope: str,
        member: str,
        generation: int = 0,
        record: tuple[str, int] | None = None,
    ) -> Verdict:
        args: list[str | int] = [limit, self._window_ms, cost, member, generation]
        if record is not None:
            args.append(record[1])
        status, remaining, retry_ms, reset_ms = await self._script(keys=keys, args=args)
        return Verdict(
            status=int(status),
            limit=limit,
            remaining=int(remaining),
            retry_after=int(retry_ms) / 1000,
            reset=int(reset_ms) / 1000,
            scope=scope,
        )
