"""API keys in PostgreSQL: personal keys and keys of service accounts.

A key is ``ekey_<12-char prefix><43-char secret>``. It is shown once; only its SHA-256 is stored
(a key has 256 random bits, so a slow hash adds nothing). ``prefix`` is how people and the list
endpoint name it. Scopes: ``chat`` (generations, jobs, sessions) and ``models`` (model lists).

Gateways never query PostgreSQL per request: they verify a key they have not seen for
``API_KEY_CACHE_TTL`` seconds at ``/internal/api-keys/verify`` and cache the answer that long
(gateway/api_keys.py). Revoking marks the key in Redis (``revoked_jti`` of its user, jti
``key:<id>``), which the gateway's admission script reads per request, so a revoked key is refused
at once on every gateway; the mark lives longer than any gateway cache entry, after which the
re-verification sees the revocation in PostgreSQL. An expired key is refused by the gateway's own
clock (the expiry is part of the cached answer).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
import msgspec

__all__ = ["KEY_PREFIX", "SCOPES", "ApiKey", "ApiKeyStore", "VerifiedKey", "key_jti"]

KEY_PREFIX = "ekey_"
SCOPES = ("chat", "models")
_KEY_PATTERN = re.compile(r"ekey_([A-Za-z0-9]{12})([A-Za-z0-9_-]{43})")
KEY_ID_PATTERN = re.compile(r"[0-9a-f]{32}")
_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

_COLUMNS = """k.id, k.prefix, k.name, k.user_id, k.organization_id, k.scopes, k.created_by,
    extract(epoch FROM k.created_at)::float8 AS created_at,
    extract(epoch FROM k.expires_at)::float8 AS expires_at,
    extract(epoch FROM k.revoked_at)::float8 AS revoked_at,
    extract(epoch FROM k.last_used_at)::float8 AS last_used_at"""


def key_jti(key_id: str) -> str:
    """The token id a key's requests carry: its revocation is ``revoked_jti`` of this."""
    return f"key:{key_id}"


class ApiKey(msgspec.Struct, frozen=True, kw_only=True):
    key_id: str
    prefix: str
    name: str
    user_id: str
    organization_id: str
    scopes: tuple[str, ...]
    created_by: str
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    last_used_at: float | None

    def public(self) -> dict[str, Any]:
        """Metadata only: never the key or its hash."""
        return {
            **msgspec.structs.asdict(self),
            "scopes": list(self.scopes),
            "prefix": KEY_PREFIX + self.prefix,
        }


class VerifiedKey(msgspec.Struct, frozen=True, kw_only=True):
    """What a gateway caches for a key: who it acts as and until when."""

    key_id: str
    user_id: str
    organization_id: str
    username: str
    role: str
    scopes: list[str]
    expires_at: float | None


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _key(row: asyncpg.Record | None) -> ApiKey | None:
    if row is None:
        return None
    return ApiKey(
        key_id=row["id"],
        prefix=row["prefix"],
        name=row["name"],
        user_id=row["user_id"],
        organization_id=row["organization_id"],
        scopes=tuple(row["scopes"]),
        created_by=row["created_by"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        last_used_at=row["last_used_at"],
    )


class ApiKeyStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create(
        self,
        *,
        user_id: str,
        organization_id: str,
        name: str,
        scopes: Sequence[str],
        expires_in: float | None,
        created_by: str,
    ) -> tuple[ApiKey, str]:
        """A new key and its secret form (returned once)."""
        prefix = "".join(secrets.choice(_ALPHABET) for _ in range(12))
        key = f"{KEY_PREFIX}{prefix}{secrets.token_urlsafe(32)}"
        row = await self._pool.fetchrow(
            f"""WITH k AS (
    INSERT INTO api_keys (id, prefix, secret_hash, name, user_id, organization_id, scopes, created_by,
                          expires_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8,
            CASE WHEN $9::float8 IS NULL THEN NULL ELSE now() + make_interval(secs => $9) END)
    RETURNING *) SELECT {_COLUMNS} FROM k""",
            uuid.uuid4().hex,
            prefix,
            _hash(key),
            name,
            user_id,
            organization_id,
            list(scopes),
            created_by,
            expires_in,
        )
        api_key = _key(row)
        assert api_key is not None
        return api_key, key

    async def get(self, key_id: str) -> ApiKey | None:
        if not KEY_ID_PATTERN.fullmatch(key_id):
            return None
        return _key(await self._pool.fetchrow(f"SELECT {_COLUMNS} FROM api_keys k WHERE k.id = $1", key_id))

    async def of_user(self, user_id: str) -> list[ApiKey]:
        rows = await self._pool.fetch(
            f"SELECT {_COLUMNS} FROM api_keys k WHERE k.user_id = $1 ORDER BY k.created_at, k.id", user_id
        )
        return [key for key in map(_key, rows) if key is not None]

    async def of_organization(self, organization_id: str) -> list[ApiKey]:
        rows = await self._pool.fetch(
            f"SELECT {_COLUMNS} FROM api_keys k WHERE k.organization_id = $1 ORDER BY k.created_at, k.id",
            organization_id,
        )
        return [key for key in map(_key, rows) if key is not None]

    async def revoke(self, key_id: str) -> ApiKey | None:
        """Mark the key revoked (idempotent: a revoked key keeps its first revocation time)."""
        if not KEY_ID_PATTERN.fullmatch(key_id):
            return None
        return _key(
            await self._pool.fetchrow(
                f"""WITH k AS (UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1
RETURNING *) SELECT {_COLUMNS} FROM k""",
                key_id,
            )
        )

    async def verify(self, key: str) -> VerifiedKey | None:
        """The key's identity when it is valid now: known, not revoked or expired, its user not
        disabled. Records ``last_used_at`` (a gateway asks once per cache period)."""
        match = _KEY_PATTERN.fullmatch(key)
        if match is None:
            return None
        row = await self._pool.fetchrow(
            """SELECT k.id, k.secret_hash, k.user_id, k.organization_id, k.scopes, u.username, u.role,
    extract(epoch FROM k.expires_at)::float8 AS expires_at
FROM api_keys k JOIN users u ON u.id = k.user_id
WHERE k.prefix = $1 AND k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > now())
  AND NOT u.disabled""",
            match.group(1),
        )
        if row is None or not hmac.compare_digest(row["secret_hash"], _hash(key)):
            return None
        await self._pool.execute("UPDATE api_keys SET last_used_at = now() WHERE id = $1", row["id"])
        return VerifiedKey(
            key_id=row["id"],
            user_id=row["user_id"],
            organization_id=row["organization_id"],
            username=row["username"],
            role=row["role"],
            scopes=list(row["scopes"]),
            expires_at=row["expires_at"],
        )
