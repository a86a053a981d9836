"""Rotating refresh tokens with reuse detection, grouped in families (one family per login).

A refresh token is ``<user_id>.<family_id>.<secret>``: opaque to clients, but it names its family's
key so the server needs no lookup index. Redis keeps, per family, only SHA-256 hashes: the current
token and every token already rotated away. Presenting the current token rotates it (the old one
becomes "used"); presenting a used one means it was stolen or replayed, so the whole family is
revoked and both holders must log in again: reuse also revokes the family's access tokens
(``revoked_sid``, in the same script), so the thief's access token stops working at once, not when
it expires. A family expires ``ttl`` after its last rotation.

A family is stamped with the user's token generation (common/revocation.py) when it is created,
and only when that is still the current generation: a login whose password check raced with a
password change, ``/logout/all`` or a disable gets no family. A family whose stamp is older than
the current generation is dead (deleted when next presented), so "revoke everything" does not
depend on finding every family.

The family key, the user's family set, the generation and the ``revoked_sid`` key share the
``{u:<user_id>}`` hash tag, so each script touches one Redis Cluster slot.
"""

from __future__ import annotations

import enum
import hashlib
import re
import secrets
import time
from dataclasses import dataclass

from common.keyspace import Keyspace
from common.redis import RedisClient

__all__ = ["RefreshOutcome", "RefreshResult", "RefreshTokenStore"]

_TOKEN_PATTERN = re.compile(r"([0-9a-f]{32})\.([0-9a-f]{32})\.([A-Za-z0-9_-]{43})")
_PRUNE_ABOVE = 32

# KEYS[1] family hash, KEYS[2] user's family set, KEYS[3] the user's token generation;
# ARGV: token hash, user id, family id, ttl ms, now, the generation read before the password check.
# Returns the family count, or -1 (nothing created) when the generation moved on meanwhile.
_CREATE = """
if (tonumber(redis.call('GET', KEYS[3]) or '0') or 0) ~= tonumber(ARGV[6]) then return -1 end
redis.call('HSET', KEYS[1], 'cur', ARGV[1], 'user_id', ARGV[2], 'created_at', ARGV[5], 'gen', ARGV[6])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('SADD', KEYS[2], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return redis.call('SCARD', KEYS[2])
"""
# KEYS[1] family hash, KEYS[2] user's family set, KEYS[3] token generation, KEYS[4] revoked_sid;
# ARGV: presented hash, new hash, family id, ttl ms, revoked_sid ttl ms.
# Returns {1, generation} rotated, {2, 0} reuse detected (family and its access tokens revoked),
# {0, 0} unknown / expired / revoked (a family older than the user's generation is deleted).
_ROTATE = """
local current = redis.call('HGET', KEYS[1], 'cur')
if not current then return {0, 0} end
local generation = tonumber(redis.call('GET', KEYS[3]) or '0') or 0
if (tonumber(redis.call('HGET', KEYS[1], 'gen') or '0') or 0) < generation then
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[2], ARGV[3])
  return {0, 0}
end
if current == ARGV[2] and redis.call('HEXISTS', KEYS[1], 'used:' .. ARGV[1]) == 1 then
  return {1, generation}  -- this very rotation, repeated after a connection error (common/redis.py)
end
if current == ARGV[1] then
  redis.call('HSET', KEYS[1], 'cur', ARGV[2], 'used:' .. ARGV[1], '1')
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
  return {1, generation}
end
if redis.call('HEXISTS', KEYS[1], 'used:' .. ARGV[1]) == 1 then
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[2], ARGV[3])
  redis.call('SET', KEYS[4], '1', 'PX', ARGV[5])
  return {2, 0}
end
return {0, 0}
"""


class RefreshOutcome(enum.Enum):
    ROTATED = "rotated"
    REUSED = "reused"
    INVALID = "invalid"


@dataclass(frozen=True, slots=True)
class RefreshResult:
    outcome: RefreshOutcome
    user_id: str = ""
    family_id: str = ""
    token: str = ""
    generation: int = 0


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def _new_token(user_id: str, family_id: str) -> str:
    return f"{user_id}.{family_id}.{secrets.token_urlsafe(32)}"


class RefreshTokenStore:
    def __init__(self, redis: RedisClient, keys: Keyspace, *, ttl: int, revoked_login_ttl: int) -> None:
        """``revoked_login_ttl``: seconds a reused family's ``revoked_sid`` is kept (access-token
        lifetime and margin, as :meth:`common.revocation.TokenRevocation.revoke_login`)."""
        self._redis = redis
        self._keys = keys
        self.ttl = ttl
        self._revoked_login_ttl_ms = revoked_login_ttl * 1000
        self._create = redis.register_script(_CREATE)
        self._rotate = redis.register_script(_ROTATE)

    async def issue(self, user_id: str, generation: int) -> tuple[str, str] | None:
        """Start a new family for a login; returns ``(refresh_token, family_id)``, or ``None``
        when the user's token generation is no longer ``generation`` (everything was revoked
        while this login was being checked)."""
        family_id = secrets.token_hex(16)
        token = _new_token(user_id, family_id)
        keys = [
            self._keys.refresh_family(user_id, family_id),
            self._keys.refresh_families(user_id),
            self._keys.token_generation(user_id),
        ]
        now = repr(time.time())
        args: list[str | int] = [_hash(token), user_id, family_id, self.ttl * 1000, now, generation]
        count = int(await self._create(keys=keys, args=args))
        if count < 0:
            return None
        if count > _PRUNE_ABOVE:
            await self._prune(user_id)
        return token, family_id

    async def rotate(self, token: str) -> RefreshResult:
        """Exchange ``token`` for a new one in the same family, or detect reuse."""
        match = _TOKEN_PATTERN.fullmatch(token)
        if match is None:
            return RefreshResult(RefreshOutcome.INVALID)
        user_id, family_id, _ = match.groups()
        new_token = _new_token(user_id, family_id)
        keys = [
            self._keys.refresh_family(user_id, family_id),
            self._keys.refresh_families(user_id),
            self._keys.token_generation(user_id),
            self._keys.revoked_sid(user_id, family_id),
        ]
        args = [_hash(token), _hash(new_token), family_id, self.ttl * 1000, self._revoked_login_ttl_ms]
        result, generation = (int(value) for value in await self._rotate(keys=keys, args=args))
        if result == 1:
            return RefreshResult(RefreshOutcome.ROTATED, user_id, family_id, new_token, generation)
        if result == 2:
            return RefreshResult(RefreshOutcome.REUSED, user_id, family_id)
        return RefreshResult(RefreshOutcome.INVALID)

    async def revoke_family(self, user_id: str, family_id: str) -> None:
        await self._redis.delete(self._keys.refresh_family(user_id, family_id))
        await self._redis.srem(self._keys.refresh_families(user_id), family_id)

    async def revoke_all(self, user_id: str) -> int:
        """Revoke every refresh token of the user (disable, password change); returns families."""
        families_key = self._keys.refresh_families(user_id)
        members = [_text(m) for m in await self._redis.smembers(families_key)]
        keys = [self._keys.refresh_family(user_id, family_id) for family_id in members]
        await self._redis.delete(*keys, families_key)
        return len(members)

    async def _prune(self, user_id: str) -> None:
        """Forget expired families so the user's set stays small."""
        families_key = self._keys.refresh_families(user_id)
        members = [_text(m) for m in await self._redis.smembers(families_key)]
        async with self._redis.pipeline(transaction=False) as pipe:
            for family_id in members:
                pipe.exists(self._keys.refresh_family(user_id, family_id))
            alive = await pipe.execute()
        dead = [family_id for family_id, exists in zip(members, alive, strict=True) if not exists]
        if dead:
            await self._redis.srem(families_key, *dead)
