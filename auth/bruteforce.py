"""Login and registration throttling in Redis that an attacker cannot aim at a victim.

A lock-out per username ("5 failures lock the account for 15 minutes, from everywhere") lets
anyone lock out anyone. Instead, every login attempt (and ``POST /me/password``'s check of the
current password) passes three limits, with these defaults (``AUTH_LOGIN_*``, auth/settings.py):

1. **Per username and client address: exponential back-off.** The first
   ``free_failures`` (3) failures cost nothing; failure number ``n`` after that makes the pair
   wait ``backoff_base * 2 ** (n - free_failures - 1)`` seconds (1 s, 2 s, 4 s ...), at most
   ``backoff_max`` (900 s). The pair forgets its failures ``window`` (900 s) after the last one,
   and a successful login clears it. This is the limit a single guesser meets; it only ever
   slows down *that* address for *that* username.
2. **Per client address: a budget** of ``max_failures_per_address`` (30) failed logins per
   ``window``, whatever the usernames (password spraying). A successful login does not reset it
   (one valid account must not launder a spraying address), but its own attempt is refunded.
3. **Per username: a ceiling** of ``user_ceiling`` (100) failures per ``window`` from all
   addresses together, against distributed guessing. It cannot lock the owner out: addresses
   that logged in successfully as this user within ``known_address_ttl`` (30 days) are exempt,
   so only new addresses wait while the ceiling is reached.

A throttled attempt is answered 429 ``too_many_attempts`` with ``Retry-After`` before any password
is checked, and is not counted. Bursts: the address and username counters count an attempt when it
is admitted (refunded when the password is right or the attempt ends in an error), and a pair
admits at most ``MAX_IN_FLIGHT`` (32) attempts at once, so a burst of parallel guesses gets at most
that many checked before its failures start the back-off, while a user's parallel logins with the
right password all pass.

Addresses are IPv4 addresses or IPv6 /64 networks (one host usually controls a whole /64). Behind
NAT many users share an address; that is the trade-off of limits 2 and 3's exemption: an office
behind one address shares one budget, and the ceiling's exemption is per address, not per device.
The client address is only the real one when auth trusts its proxies (``AUTH_TRUSTED_PROXIES``,
common/http.py ``client_address``).

Registrations are limited per client address: ``AUTH_REGISTER_MAX_PER_IP`` (20) attempts per
``AUTH_REGISTER_WINDOW`` (3600 s, a fixed window), 429 ``registration_throttled``.

Counters keep their time in Redis (``TIME``), so auth instances' clocks do not matter.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from auth.schemas import USERNAME_PATTERN
from common.keyspace import Keyspace
from common.redis import RedisClient

__all__ = [
    "LoginAttempt",
    "LoginPolicy",
    "LoginThrottle",
    "LoginThrottled",
    "RegistrationThrottle",
    "address_subject",
]

IPV6_PREFIX = 64
KNOWN_ADDRESSES_KEPT = 20
MAX_IN_FLIGHT = 32

# KEYS[1] counter; ARGV[1] limit, ARGV[2] window ms. Count one attempt unless the limit is reached;
# returns 0 when counted, else ms until the window ends.
_RESERVE_COUNTER = """
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n >= tonumber(ARGV[1]) then
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl < 0 then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return tonumber(ARGV[2])
  end
  return math.max(ttl, 1)
end
n = redis.call('INCR', KEYS[1])
if n == 1 or redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
# KEYS[1] counter. Give back one counted attempt (keeps the TTL; never creates the key).
_REFUND = """
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('DECR', KEYS[1]) end
return 0
"""
# KEYS[1] pair hash {n: failures, until: ms, inflight: attempts being checked}; ARGV max in flight,
# memory ms. Returns ms to wait (the back-off, or 1 s while max attempts are in flight), else 0 and
# counts one more attempt in flight.
_PAIR_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local wait_until = tonumber(redis.call('HGET', KEYS[1], 'until') or '0') or 0
if wait_until > now then return wait_until - now end
if (tonumber(redis.call('HGET', KEYS[1], 'inflight') or '0') or 0) >= tonumber(ARGV[1]) then return 1000 end
redis.call('HINCRBY', KEYS[1], 'inflight', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 0
"""
# KEYS[1] pair hash; ARGV free failures, base ms, max ms, memory ms. Records failure n (an attempt
# in flight ends) and the wait it earns: base * 2^(n - free - 1), at most max. Returns that wait.
_PAIR_FAILED = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('HINCRBY', KEYS[1], 'inflight', -1) < 0 then redis.call('HSET', KEYS[1], 'inflight', 0) end
local n = redis.call('HINCRBY', KEYS[1], 'n', 1)
local free = tonumber(ARGV[1])
local delay = 0
if n > free then
  delay = math.floor(math.min(tonumber(ARGV[3]), tonumber(ARGV[2]) * 2 ^ math.min(n - free - 1, 40)))
end
local wait_until = math.max(now + delay, tonumber(redis.call('HGET', KEYS[1], 'until') or '0') or 0)
redis.call('HSET', KEYS[1], 'until', wait_until)
redis.call('PEXPIRE', KEYS[1], math.max(tonumber(ARGV[4]), wait_until - now))
return delay
"""
# KEYS[1] pair hash. An attempt in flight ended without a verdict (an error): forget it.
_PAIR_RELEASE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HINCRBY', KEYS[1], 'inflight', -1) < 0 then redis.call('HSET', KEYS[1], 'inflight', 0) end
return 1
"""
# KEYS[1] known-address sorted set; ARGV address, now, oldest score kept, entries kept, ttl ms.
_REMEMBER = """
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3])
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(tonumber(ARGV[4]) + 1))
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""


def username_subject(username: str) -> str:
    """Key part for a username; arbitrary login input is hashed to bound key names."""
    lowered = username.lower()
    if USERNAME_PATTERN.fullmatch(lowered):
        return lowered
    return "h:" + hashlib.sha256(username.encode("utf-8", errors="replace")).hexdigest()[:32]


def address_subject(address: str) -> str:
    """Key part for a client address: the IPv4 address, or the IPv6 address's /64 network."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return "h:" + hashlib.sha256(address.encode("utf-8", errors="replace")).hexdigest()[:32]
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((parsed, IPV6_PREFIX), strict=False))
    return str(parsed)


def _seconds(wait_ms: int) -> int:
    return max(1, math.ceil(wait_ms / 1000))


@dataclass(frozen=True, slots=True)
class LoginPolicy:
    """The numbers of the login throttle (see the module docstring); from auth/settings.py."""

    free_failures: int = 3
    backoff_base: float = 1.0
    backoff_max: float = 900.0
    max_failures_per_address: int = 30
    user_ceiling: int = 100
    window: float = 900.0
    known_address_ttl: float = 30 * 86400.0


class LoginThrottled(Exception):
    """The attempt was not admitted; wait ``retry_after`` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"throttled for {retry_after} s")
        self.retry_after = retry_after


@dataclass(slots=True)
class LoginAttempt:
    """An admitted attempt; the caller sets ``password_ok`` once the password was checked."""

    user: str
    address: str
    ceiling_counted: bool = False
    password_ok: bool | None = None


class LoginThrottle:
    def __init__(self, redis: RedisClient, keys: Keyspace, policy: LoginPolicy) -> None:
        self._redis = redis
        self._keys = keys
        self.policy = policy
        self._window_ms = max(1, int(policy.window * 1000))
        self._reserve_counter = redis.register_script(_RESERVE_COUNTER)
        self._refund = redis.register_script(_REFUND)
        self._pair_admit = redis.register_script(_PAIR_ADMIT)
        self._pair_failed = redis.register_script(_PAIR_FAILED)
        self._pair_release = redis.register_script(_PAIR_RELEASE)
        self._remember = redis.register_script(_REMEMBER)

    @contextlib.asynccontextmanager
    async def attempt(self, username: str, client_ip: str) -> AsyncIterator[LoginAttempt]:
        """Admit one password check or raise :class:`LoginThrottled`; settle it on exit.

        Set ``password_ok`` inside the block: ``True`` clears the pair and refunds the attempt,
        ``False`` records a failure; left ``None`` (an error), the attempt is forgotten.
        """
        attempt = await self._admit(username_subject(username), address_subject(client_ip))
        try:
            yield attempt
        finally:
            if attempt.password_ok is True:
                await self._succeeded(attempt)
            elif attempt.password_ok is False:
                await self._pair_failed(keys=[self._pair_key(attempt)], args=self._backoff_args())
            else:
                await asyncio.gather(
                    self._pair_release(keys=[self._pair_key(attempt)]), self._give_back(attempt)
                )

    async def _admit(self, user: str, address: str) -> LoginAttempt:
        # Limits in order address, username ceiling, pair; a refusal gives back what the earlier
        # ones counted. The counters count the attempt now (refunded on success), so a burst of
        # parallel guesses cannot all pass before the first failure is recorded.
        policy = self.policy
        wait = await self._reserve(self._keys.login_failures_ip(address), policy.max_failures_per_address)
        if wait:
            raise LoginThrottled(_seconds(wait))
        attempt = LoginAttempt(user, address)
        if not await self._is_known(user, address):
            wait = await self._reserve(self._keys.login_failures_user(user), policy.user_ceiling)
            if wait:
                await self._give_back(attempt)
                raise LoginThrottled(_seconds(wait))
            attempt.ceiling_counted = True
        wait = int(
            await self._pair_admit(keys=[self._pair_key(attempt)], args=[MAX_IN_FLIGHT, self._window_ms])
        )
        if wait:
            await self._give_back(attempt)
            raise LoginThrottled(_seconds(wait))
        return attempt

    async def _succeeded(self, attempt: LoginAttempt) -> None:
        # Clear the pair, refund the attempt, and remember the address as one this user logs in
        # from (exempt from the username ceiling).
        now = time.time()
        ttl = self.policy.known_address_ttl
        await asyncio.gather(
            self._redis.delete(self._pair_key(attempt)),
            self._give_back(attempt),
            self._remember(
                keys=[self._keys.login_known_addresses(attempt.user)],
                args=[attempt.address, repr(now), repr(now - ttl), KNOWN_ADDRESSES_KEPT, int(ttl * 1000)],
            ),
        )

    def _pair_key(self, attempt: LoginAttempt) -> str:
        return self._keys.login_failures_pair(attempt.user, attempt.address)

    def _backoff_args(self) -> list[int]:
        policy = self.policy
        return [
            policy.free_failures,
            int(policy.backoff_base * 1000),
            int(policy.backoff_max * 1000),
            self._window_ms,
        ]

    async def _reserve(self, key: str, limit: int) -> int:
        return int(await self._reserve_counter(keys=[key], args=[limit, self._window_ms]))

    async def _give_back(self, attempt: LoginAttempt) -> None:
        refunds = [self._refund(keys=[self._keys.login_failures_ip(attempt.address)])]
        if attempt.ceiling_counted:
            refunds.append(self._refund(keys=[self._keys.login_failures_user(attempt.user)]))
        await asyncio.gather(*refunds)

    async def _is_known(self, user: str, address: str) -> bool:
        score = await self._redis.zscore(self._keys.login_known_addresses(user), address)
        return score is not None and float(score) >= time.time() - self.policy.known_address_ttl


class RegistrationThrottle:
    """At most ``limit`` registration attempts per client address per ``window`` seconds
    (a fixed window; ``limit`` 0 turns it off)."""

    def __init__(self, redis: RedisClient, keys: Keyspace, *, limit: int, window: float) -> None:
        self._keys = keys
        self._limit = limit
        self._window_ms = max(1, int(window * 1000))
        self._reserve_counter = redis.register_script(_RESERVE_COUNTER)

    async def admit(self, client_ip: str) -> int | None:
        """Count one attempt from ``client_ip``; seconds to wait when over the limit, else ``None``."""
        if self._limit <= 0:
            return None
        key = self._keys.registrations_ip(address_subject(client_ip))
        wait = int(await self._reserve_counter(keys=[key], args=[self._limit, self._window_ms]))
        return _seconds(wait) if wait else None
