"""The user store in PostgreSQL: people and service accounts, each in one organization.

Uniqueness (username, email, case-insensitively) is the database's: a unique index, so two
concurrent registrations of one name cannot both succeed. What the gateway must see without
asking PostgreSQL stays in Redis: the ``disabled_user`` flag and the user's token generation
(common/revocation.py). Disabling writes PostgreSQL first (the truth, which login and API-key
verification read), then the Redis flag and a generation bump (every access token and refresh
family dies).

Roles: ``admin`` (platform admin), ``org_admin`` (administers one organization) and ``user``
(a member). Service accounts (``kind = 'service'``) have no password; they act through API keys.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import asyncpg
import msgspec

from auth.database import Connection
from common.keyspace import Keyspace
from common.redis import RedisClient

__all__ = ["ROLES", "EmailTaken", "User", "UserStore", "UsernameTaken"]

ROLES = ("user", "org_admin", "admin")
USER_ID_PATTERN = re.compile(r"[0-9a-f]{32}")
CURSOR_PATTERN = re.compile(r"[0-9]{1,20}\.[0-9]{6}:[0-9a-f]{32}")

_COLUMNS = """u.id, u.username, u.email, u.organization_id, o.name AS organization, u.role, u.kind,
    u.password_hash, u.disabled, extract(epoch FROM u.created_at)::float8 AS created_at,
    extract(epoch FROM u.updated_at)::float8 AS updated_at"""
_SELECT = f"SELECT {_COLUMNS} FROM users u JOIN organizations o ON o.id = u.organization_id"


class UsernameTaken(Exception):
    pass


class EmailTaken(Exception):
    pass


class User(msgspec.Struct, frozen=True, kw_only=True):
    user_id: str
    username: str
    email: str
    organization_id: str
    organization: str
    role: str
    kind: str
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
            "organization_id": self.organization_id,
            "role": self.role,
            "kind": self.kind,
            "disabled": self.disabled,
            "created_at": self.created_at,
        }

    @property
    def is_platform_admin(self) -> bool:
        return self.role == "admin"


def _user(row: asyncpg.Record | None) -> User | None:
    if row is None:
        return None
    return User(
        user_id=row["id"],
        username=row["username"],
        email=row["email"] or "",
        organization_id=row["organization_id"],
        organization=row["organization"],
        role=row["role"],
        kind=row["kind"],
        password_hash=row["password_hash"] or "",
        disabled=row["disabled"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _conflict(exc: asyncpg.UniqueViolationError, username: str, email: str) -> Exception:
    if "email" in (exc.constraint_name or ""):
        return EmailTaken(email)
    return UsernameTaken(username)


class UserStore:
    def __init__(self, pool: asyncpg.Pool, redis: RedisClient, keys: Keyspace) -> None:
        self._pool = pool
        self._redis = redis
        self._keys = keys

    async def create(
        self,
        *,
        username: str,
        email: str | None,
        organization_id: str,
        password_hash: str | None,
        role: str = "user",
        kind: str = "person",
        connection: Connection | None = None,
    ) -> User:
        """Store a new user; :class:`UsernameTaken` / :class:`EmailTaken` on a conflict.
        ``connection``: run inside the caller's transaction (an invitation's redemption)."""
        user_id = uuid.uuid4().hex
        query = f"""
WITH inserted AS (
    INSERT INTO users (id, username, username_lower, email, email_lower, organization_id, role, kind,
                       password_hash)
    VALUES ($1, $2, lower($2), $3, lower($3), $4, $5, $6, $7)
    RETURNING *
)
{_SELECT.replace("FROM users u", "FROM inserted u")}"""
        args = (user_id, username, email, organization_id, role, kind, password_hash)
        try:
            if connection is not None:
                row = await connection.fetchrow(query, *args)
            else:
                row = await self._pool.fetchrow(query, *args)
        except asyncpg.UniqueViolationError as exc:
            raise _conflict(exc, username, email or "") from None
        user = _user(row)
        assert user is not None
        return user

    async def get(self, user_id: str) -> User | None:
        if not USER_ID_PATTERN.fullmatch(user_id):
            return None
        return _user(await self._pool.fetchrow(f"{_SELECT} WHERE u.id = $1", user_id))

    async def find_by_username(self, username: str) -> User | None:
        return _user(await self._pool.fetchrow(f"{_SELECT} WHERE u.username_lower = lower($1)", username))

    async def page(
        self, cursor: str | None, limit: int, *, organization_id: str | None = None
    ) -> tuple[list[User], str | None]:
        """Users in registration order, ``limit`` at a time (one organization's when given);
        ``cursor`` is the previous page's ``next``."""
        after_time, after_id = 0.0, ""
        if cursor is not None:
            if not CURSOR_PATTERN.fullmatch(cursor):
                raise ValueError("malformed cursor")
            stamp, after_id = cursor.split(":", 1)
            after_time = float(stamp)
        rows = await self._pool.fetch(
            f"""{_SELECT}
WHERE ($1::text IS NULL OR u.organization_id = $1)
  AND (extract(epoch FROM u.created_at)::numeric(26, 6), u.id) > ($2::numeric(26, 6), $3)
ORDER BY u.created_at, u.id LIMIT $4""",
            organization_id,
            f"{after_time:.6f}",
            after_id,
            limit + 1,
        )
        users = [user for user in map(_user, rows[:limit]) if user is not None]
        next_cursor = None
        if len(rows) > limit:
            last = users[-1]
            next_cursor = f"{last.created_at:.6f}:{last.user_id}"
        return users, next_cursor

    async def set_disabled(self, user_id: str, disabled: bool) -> User | None:
        """Disable (or enable) a user: PostgreSQL, then the gateway-visible Redis flag (and, when
        disabling, a token-generation bump: every token dies, enabling revives none)."""
        if not USER_ID_PATTERN.fullmatch(user_id):
            return None
        user = _user(
            await self._pool.fetchrow(
                f"""WITH changed AS (UPDATE users SET disabled = $2, updated_at = now() WHERE id = $1
RETURNING *) {_SELECT.replace("FROM users u", "FROM changed u")}""",
                user_id,
                disabled,
            )
        )
        if user is None:
            return None
        if disabled:
            await self._redis.set(self._keys.disabled_user(user_id), repr(time.time()))
            await self._redis.incr(self._keys.token_generation(user_id))
        else:
            await self._redis.delete(self._keys.disabled_user(user_id))
        return user

    async def change_password(self, user_id: str, password_hash: str) -> bool:
        """Store a new password hash, then revoke every token of the user; ``False`` when the user
        does not exist."""
        if not USER_ID_PATTERN.fullmatch(user_id):
            return False
        status = await self._pool.execute(
            "UPDATE users SET password_hash = $2, updated_at = now() WHERE id = $1", user_id, password_hash
        )
        if status != "UPDATE 1":
            return False
        await self._redis.incr(self._keys.token_generation(user_id))
        return True

    async def set_role(self, user_id: str, role: str) -> User | None:
        return await self._update(user_id, "role", role)

    async def set_password_hash(self, user_id: str, password_hash: str) -> User | None:
        """Replace the hash of the *same* password (a re-hash at a new cost); tokens stay valid."""
        return await self._update(user_id, "password_hash", password_hash)

    async def remove(self, user_id: str) -> bool:
        """Delete a user (their API keys go with them) and end every token of theirs."""
        if not USER_ID_PATTERN.fullmatch(user_id):
            return False
        if await self._pool.execute("DELETE FROM users WHERE id = $1", user_id) != "DELETE 1":
            return False
        await self._redis.set(self._keys.disabled_user(user_id), repr(time.time()))
        await self._redis.incr(self._keys.token_generation(user_id))
        return True

    async def is_disabled(self, user_id: str) -> bool:
        return bool(await self._pool.fetchval("SELECT disabled FROM users WHERE id = $1", user_id))

    async def _update(self, user_id: str, column: str, value: str) -> User | None:
        if not USER_ID_PATTERN.fullmatch(user_id) or column not in {"role", "password_hash"}:
            return None
        return _user(
            await self._pool.fetchrow(
                f"""WITH changed AS (UPDATE users SET {column} = $2, updated_at = now() WHERE id = $1
RETURNING *) {_SELECT.replace("FROM users u", "FROM changed u")}""",
                user_id,
                value,
            )
        )
