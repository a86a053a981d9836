"""Failed-login throttling per username and per client address, in Redis.

Each subject has a fixed-window counter: the first failure starts a window of
``window`` seconds (INCR + PEXPIRE in one script, so a counter never lives without a TTL). While a
counter is at its limit, logins for that subject answer 429 before any password is checked; the
window's end is the ``Retry-After``. A successful login clears the username's counter, not the
address's (one valid account must not reset a password-spraying address).
"""

from __future__ import annotations

import asyncio
import hashlib
import math

from auth.schemas import USERNAME_PATTERN
from common.keyspace import Keyspace
from common.redis import RedisClient

__all__ = ["LoginThrottle"]

# KEYS[1] counter; ARGV[1] window ms. Returns the new count.
_RECORD = """
local n = redis.call('INCR', KEYS[1])
if n == 1 or redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return n
"""
# KEYS[1] counter; ARGV[1] limit. Returns ms until the subject may try again, 0 when not locked.
_LOCKED_FOR = """
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n < tonumber(ARGV[1]) then return 0 end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 1 then return 1 end
return ttl
"""


def username_subject(username: str) -> str:
    """Counter key part for a username; arbitrary login input is hashed to bound key names."""
    lowered = username.lower()
    if USERNAME_PATTERN.fullmatch(lowered):
        return lowered
    return "h:" + hashlib.sha256(username.encode("utf-8", errors="replace")).hexdigest()[:32]


class LoginThrottle:
    def __init__(
        self,
        redis: RedisClient,
        keys: Keyspace,
        *,
        max_per_user: int,
        max_per_ip: int,
        window: float,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._max_per_user = max_per_user
        self._max_per_ip = max_per_ip
        self._window_ms = max(1, int(window * 1000))
        self._record = redis.register_script(_RECORD)
        self._locked_for = redis.register_script(_LOCKED_FOR)

    def _user_key(self, username: str) -> str:
        return self._keys.login_failures_user(username_subject(username))

    async def retry_after(self, username: str, client_ip: str) -> int | None:
        """Seconds to wait when the username or the address is locked out, else ``None``."""
        user_ms, ip_ms = await asyncio.gather(
            self._locked_for(keys=[self._user_key(username)], args=[self._max_per_user]),
            self._locked_for(keys=[self._keys.login_failures_ip(client_ip)], args=[self._max_per_ip]),
        )
        wait_ms = max(int(user_ms), int(ip_ms))
        return max(1, math.ceil(wait_ms / 1000)) if wait_ms > 0 else None

    async def record_failure(self, username: str, client_ip: str) -> None:
        await asyncio.gather(
            self._record(keys=[self._user_key(username)], args=[self._window_ms]),
            self._record(keys=[self._keys.login_failures_ip(client_ip)], args=[self._window_ms]),
        )

    async def clear_user(self, username: str) -> None:
        await self._redis.delete(self._user_key(username))
