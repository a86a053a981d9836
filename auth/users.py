"""The user store in Redis: one hash per user, uniqueness claims for username, email, organization.

Uniqueness works in Redis Cluster without a shared slot: the username, the email and (for a
registration that creates its organization) the organization name are claimed with separate
``SET NX`` (first with a short TTL, so a crash mid-registration frees them), the record is
written, then the claims are made permanent with a compare-and-persist script. A conflict at any
step rolls back what this registration wrote, claims included: the organization is claimed last,
so a registration refused for its username or email never holds the organization name.

Until invitations exist, an organization is joined only through the admin paths (bootstrap admin,
``create-admin``), which pass ``new_organization=False``. Deployments that predate organization
claims get them from :meth:`UserStore.claim_existing_organizations`, run once per deployment before
the first check of an organization name (lazily, so the service starts while Redis is down).

Disabling sets the gateway-visible ``disabled_user`` key and bumps the user's token generation
(every access token and refresh family dies); a password change bumps it too. Both share the
user's ``{u:<id>}`` hash tag with the record, so one script updates them atomically.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from typing import Any

import msgspec
import structlog
from redis.typing import EncodableT, FieldT

from auth.schemas import fold_organization
from common.keyspace import Keyspace
from common.redis import RedisClient

__all__ = ["EmailTaken", "OrganizationTaken", "User", "UserStore", "UsernameTaken"]

CLAIM_TTL_SECONDS = 60
MIGRATION_PAGE = 500

log = structlog.get_logger(__name__)
ORGANIZATION_CLAIMS_MIGRATION = "organization_claims"
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
# KEYS[1] user hash, KEYS[2] disabled_user key, KEYS[3] token generation;
# ARGV[1] '1' to disable, '0' to enable, ARGV[2] now. Disabling revokes every token.
_SET_DISABLED = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'disabled', ARGV[1], 'updated_at', ARGV[2])
if ARGV[1] == '1' then
  redis.call('SET', KEYS[2], ARGV[2])
  redis.call('INCR', KEYS[3])
else
  redis.call('DEL', KEYS[2])
end
return 1
"""
# KEYS[1] user hash, KEYS[2] token generation; ARGV: new password hash, now.
# A new password and the end of every token issued under the old one, atomically.
_CHANGE_PASSWORD = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'password_hash', ARGV[1], 'updated_at', ARGV[2])
redis.call('INCR', KEYS[2])
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


class OrganizationTaken(Exception):
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
        self._change_password = redis.register_script(_CHANGE_PASSWORD)
        self._organizations_claimed = False
        self._claim_lock = asyncio.Lock()

    async def create(
        self,
        *,
        username: str,
        email: str,
        organization: str,
        password_hash: str,
        role: str = "user",
        new_organization: bool = True,
    ) -> User:
        """Store a new user; raise :class:`UsernameTaken` / :class:`EmailTaken` on a conflict, and
        :class:`OrganizationTaken` when ``new_organization`` and the organization already exists
        (``new_organization=False``: join it, or create it when it does not exist).

        Shielded: once claims are taken, a cancelled request still finishes or rolls back.
        """
        if new_organization:
            await self._ensure_organizations_claimed()
        return await asyncio.shield(
            self._create(username, email, organization, password_hash, role, new_organization)
        )

    async def _create(
        self,
        username: str,
        email: str,
        organization: str,
        password_hash: str,
        role: str,
        new_organization: bool,
    ) -> User:
        user_id = uuid.uuid4().hex
        now = time.time()
        name_key = self._keys.auth_username(username.lower())
        email_key = self._keys.auth_email(email.lower())
        org_key = self._keys.auth_organization(fold_organization(organization))
        if not new_organization:  # joining: take the organization's own spelling ("acme" -> "ACME")
            organization = await self._organization_spelling(org_key, organization)
        if not await self._redis.set(name_key, user_id, nx=True, ex=CLAIM_TTL_SECONDS):
            raise UsernameTaken(username)
        if not await self._redis.set(email_key, user_id, nx=True, ex=CLAIM_TTL_SECONDS):
            await self._release_claim(keys=[name_key], args=[user_id])
            raise EmailTaken(email)
        if new_organization and not await self._redis.set(org_key, user_id, nx=True, ex=CLAIM_TTL_SECONDS):
            await self._release_claim(keys=[name_key], args=[user_id])
            await self._release_claim(keys=[email_key], args=[user_id])
            raise OrganizationTaken(organization)
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
            org_kept = await self._persist_claim(keys=[org_key], args=[user_id]) if new_organization else 1
            if not name_kept:
                raise UsernameTaken(username)  # our claim expired and someone else took it
            if not email_kept:
                raise EmailTaken(email)
            if not org_kept:
                raise OrganizationTaken(organization)
        except BaseException:
            await self._redis.delete(self._keys.auth_user(user_id))
            await self._redis.zrem(self._keys.auth_user_index(), index_member)
            await self._release_claim(keys=[name_key], args=[user_id])
            await self._release_claim(keys=[email_key], args=[user_id])
            if new_organization:
                await self._release_claim(keys=[org_key], args=[user_id])
            raise
        if not new_organization:  # joined (admin path): make sure the name counts as taken
            await self._redis.set(org_key, user_id, nx=True)
        return user

    async def _organization_spelling(self, org_key: str, organization: str) -> str:
        owner = await self._redis.get(org_key)
        founder = await self.get(_text(owner)) if owner is not None else None
        return founder.organization if founder is not None else organization

    async def organization_exists(self, organization: str) -> bool:
        """Whether the organization name is taken (case-insensitively), by a user or a claim."""
        await self._ensure_organizations_claimed()
        return bool(await self._redis.exists(self._keys.auth_organization(fold_organization(organization))))

    async def _ensure_organizations_claimed(self) -> None:
        if self._organizations_claimed:
            return
        async with self._claim_lock:
            if not self._organizations_claimed:
                claimed = await self.claim_existing_organizations()
                if claimed:
                    log.info("organizations_claimed", count=claimed)
                self._organizations_claimed = True

    async def claim_existing_organizations(self) -> int:
        """Claim the organization of every stored user (once per deployment; idempotent).

        Users registered before organization names were claimed would otherwise leave their
        organizations open to anyone registering the same name. Returns how many were claimed.
        """
        marker = self._keys.auth_migration(ORGANIZATION_CLAIMS_MIGRATION)
        if await self._redis.exists(marker):
            return 0
        claimed = 0
        cursor: str | None = None
        while True:
            users, cursor = await self.page(cursor, MIGRATION_PAGE)
            if users:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for user in users:
                        org_key = self._keys.auth_organization(fold_organization(user.organization))
                        pipe.set(org_key, user.user_id, nx=True)
                    claimed += sum(1 for result in await pipe.execute() if result)
            if cursor is None:
                break
        await self._redis.set(marker, repr(time.time()))
        return claimed

    async def get(self, user_id: str) -> User | None:
        if not USER_ID_PATTERN.fullmatch(user_id):
            return None
        return _decode(await self._redis.hgetall(self._keys.auth_user(user_id)))

    async def username_claimed(self, username: str) -> bool:
        """Whether the username is taken or being registered right now."""
        return bool(await self._redis.exists(self._keys.auth_username(username.lower())))

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
        keys = [
            self._keys.auth_user(user_id),
            self._keys.disabled_user(user_id),
            self._keys.token_generation(user_id),
        ]
        if not await self._set_disabled(keys=keys, args=["1" if disabled else "0", repr(time.time())]):
            return None
        return await self.get(user_id)

    async def change_password(self, user_id: str, password_hash: str) -> bool:
        """Store a new password hash and revoke every token of the user (one script); ``False``
        when the user does not exist."""
        if not USER_ID_PATTERN.fullmatch(user_id):
            return False
        keys = [self._keys.auth_user(user_id), self._keys.token_generation(user_id)]
        return bool(await self._change_password(keys=keys, args=[password_hash, repr(time.time())]))

    async def set_role(self, user_id: str, role: str) -> User | None:
        return await self._update(user_id, "role", role)

    async def set_password_hash(self, user_id: str, password_hash: str) -> User | None:
        """Replace the hash of the *same* password (a re-hash at a new cost); tokens stay valid."""
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
