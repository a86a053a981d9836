"""The user store in Redis: one hash per user, uniqueness claims for username and email.

Uniqueness works in Redis Cluster without a shared slot: the username and the email are claimed
with separate ``SET NX`` (first with a short TTL, so a crash mid-registration frees them), the
record is written, then both claims are made permanent with a compare-and-persist script. A
conflict at any step rolls back what this registration wrote. Disabling sets the gateway-visible
``disabled_user`` key; it shares the user's ``{u:<id>}`` hash tag with the record, so one script
updates both atomically.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from typing import Any

import msgspec
from redis.typing import EncodableT, FieldT

from common.keyspace import Keyspace
from common.redis import RedisClient

__all__ = ["EmailTaken", "User", "UserStore", "UsernameTaken"]

CLAIM_TTL_SECONDS = 60
USER_ID_PATTERN = re.compile(r"[0-9a-f]{32}")
CURSOR_PATTERN = re.compile(r"[0-9]{15}:[0-9a-f]{32}")

# KEYS[1] claim; ARGV[1] owner. Make the claim permanent only if we still own it.
_PERSIST_CLAIM = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PERSIST', KEYS[1])
  return 1
end
return 0
"""
# KEYS[1] claim; ARGV[1] owner. Release only our own claim.
_RELEASE_CLAIM = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
# KEYS[1] user hash, KEYS[2] disabled_user key; ARGV[1] '1' to disable, '0' to enable, ARGV[2] now.
_SET_DISABLED = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'disabled', ARGV[1], 'updated_at', ARGV[2])
if ARGV[1] == '1' then
  redis.call('SET', KEYS[2], ARGV[2])
else
  redis.call('DEL', KEYS[2])
end
return 1
"""
# KEYS[1] user hash; ARGV: field, value, now. Update a field of an existing user only.
_SET_FIELD = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2], 'updated_at', ARGV[3])
return 1
"""


class UsernameTaken(Exception):
    pass


class EmailTaken(Exception):
    pass


class User(msgspec.Struct, frozen=True, kw_only=True):
    user_id: str
    username: str
    email: str
    organization: str
    role: str
    password_hash: str
    disabled: bool
    created_at: float
    updated_at: float

    def public(self) -> dict[str, Any]:
        """The user as the API shows it: everything but the password hash."""
        return {
            "user_id": self.user_id,
            "username": self.username,
            "email": self.email,
            "organization": self.organization,
            "role": self.role,
            "disabled": self.disabled,
            "created_at": self.created_at,
        }


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _decode(raw: dict[bytes | str, bytes | str]) -> User | None:
    if not raw:
        return None
    fields = {_text(k): _text(v) for k, v in raw.items()}
    try:
        return User(
            user_id=fields["user_id"],
            username=fields["username"],
            email=fields["email"],
            organization=fields["organization"],
            role=fields["role"],
            password_hash=fields["password_hash"],
            disabled=fields.get("disabled") == "1",
            created_at=float(fields["created_at"]),
            updated_at=float(fields.get("updated_at", fields["created_at"])),
        )
    except (KeyError, ValueError):  # a partial record of a registration being rolled back
        return None


class UserStore:
    def __init__(self, redis: RedisClient, keys: Keyspace) -> None:
        self._redis = redis
        self._keys = keys
        self._persist_claim = redis.register_script(_PERSIST_CLAIM)
        self._release_claim = redis.register_script(_RELEASE_CLAIM)
        self._set_disabled = redis.register_script(_SET_DISABLED)
        self._set_field = redis.register_script(_SET_FIELD)

    async def create(
        self, *, username: str, email: str, organization: str, password_hash: str, role: str = "user"
    ) -> User:
        """Store a new user; raise :class:`UsernameTaken` / :class:`EmailTaken` on a conflict.

        Shielded: once claims are taken, a cancelled request still finishes or rolls back.
        """
        return await asyncio.shield(self._create(username, email, organization, password_hash, role))

    async def _create(
        self, username: str, email: str, organization: str, password_hash: str, role: str
    ) -> User:
        user_id = uuid.uuid4().hex
        now = time.time()
        name_key = self._keys.auth_username(username.lower())
        email_key = self._keys.auth_email(email.lower())
        if not await self._redis.set(name_key, user_id, nx=True, ex=CLAIM_TTL_SECONDS):
            raise UsernameTaken(username)
        if not await self._redis.set(email_key, user_id, nx=True, ex=CLAIM_TTL_SECONDS):
            await self._release_claim(keys=[name_key], args=[user_id])
            raise EmailTaken(email)
        user = User(
            user_id=user_id,
            username=username,
            email=email,
            organization=organization,
            role=role,
            password_hash=password_hash,
            disabled=False,
            created_at=now,
            updated_at=now,
        )
        index_member = f"{int(now * 1000):015d}:{user_id}"
        try:
            await self._redis.hset(self._keys.auth_user(user_id), mapping=_encode(user))
            await self._redis.zadd(self._keys.auth_user_index(), {index_member: 0})
            name_kept = await self._persist_claim(keys=[name_key], args=[user_id])
            email_kept = await self._persist_claim(keys=[email_key], args=[user_id])
            if not name_kept:
                raise UsernameTaken(username)  # our claim expired and someone else took it
            if not email_kept:
                raise EmailTaken(email)
        except BaseException:
            await self._redis.delete(self._keys.auth_user(user_id))
            await self._redis.zrem(self._keys.auth_user_index(), index_member)
            await self._release_claim(keys=[name_key], args=[user_id])
            await self._release_claim(keys=[email_key], args=[user_id])
            raise
        return user

    async def get(self, user_id: str) -> User | None:
        if not USER_ID_PATTERN.fullmatch(user_id):
            return None
        return _decode(await self._redis.hgetall(self._keys.auth_user(user_id)))

    async def find_by_username(self, username: str) -> User | None:
        owner = await self._redis.get(self._keys.auth_username(username.lower()))
        return None if owner is None else await self.get(_text(owner))

    async def page(self, cursor: str | None, limit: int) -> tuple[list[User], str | None]:
        """Users in registration order, ``limit`` at a time; ``cursor`` is the previous ``next``."""
        if cursor is not None and not CURSOR_PATTERN.fullmatch(cursor):
            raise ValueError("malformed cursor")
        start = "-" if cursor is None else f"({cursor}"
        members = await self._redis.zrangebylex(
            self._keys.auth_user_index(), start, "+", start=0, num=limit + 1
        )
        page = [_text(m) for m in members[:limit]]
        next_cursor = page[-1] if len(members) > limit else None
        if not page:
            return [], None
        async with self._redis.pipeline(transaction=False) as pipe:
            for member in page:
                pipe.hgetall(self._keys.auth_user(member.split(":", 1)[1]))
            records = await pipe.execute()
        users = [user for user in map(_decode, records) if user is not None]
        return users, next_cursor

    async def set_disabled(self, user_id: str, disabled: bool) -> User | None:
        """Disable (or enable) a user; the gateway sees ``Keyspace.disabled_user`` at once."""
        if not USER_ID_PATTERN.fullmatch(user_id):
            return None
        keys = [self._keys.auth_user(user_id), self._keys.disabled_user(user_id)]
        if not await self._set_disabled(keys=keys, args=["1" if disabled else "0", repr(time.time())]):
            return None
        return await self.get(user_id)

    async def set_role(self, user_id: str, role: str) -> User | None:
        return await self._update(user_id, "role", role)

    async def set_password_hash(self, user_id: str, password_hash: str) -> User | None:
        return await self._update(user_id, "password_hash", password_hash)

    async def is_disabled(self, user_id: str) -> bool:
        return bool(await self._redis.exists(self._keys.disabled_user(user_id)))

    async def _update(self, user_id: str, field: str, value: str) -> User | None:
        if not USER_ID_PATTERN.fullmatch(user_id):
            return None
        key = self._keys.auth_user(user_id)
        if not await self._set_field(keys=[key], args=[field, value, repr(time.time())]):
            return None
        return await self.get(user_id)


def _encode(user: User) -> dict[FieldT, EncodableT]:
    return {
        "user_id": user.user_id,
        "username": user.username,
        "email": user.email,
        "organization": user.organization,
        "role": user.role,
        "password_hash": user.password_hash,
        "disabled": "1" if user.disabled else "0",
        "created_at": repr(user.created_at),
        "updated_at": repr(user.updated_at),
    }
