"""Invitations: how a person joins an existing organization (besides an allowed email domain).

An org admin (or a platform admin) creates one; the token is shown once and stored as a SHA-256
hash. Redeeming it at ``POST /register`` (``invitation_token``) is single-use and expiring: the
claim and the new account are one transaction, so a refused registration leaves it unused.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from typing import Any

import asyncpg
import msgspec

from auth.database import Connection

__all__ = ["Invitation", "InvitationStore", "hash_token"]

TOKEN_PREFIX = "inv_"
_COLUMNS = """id, organization_id, email, role, created_by, used_by,
    extract(epoch FROM created_at)::float8 AS created_at,
    extract(epoch FROM expires_at)::float8 AS expires_at,
    extract(epoch FROM used_at)::float8 AS used_at"""


class Invitation(msgspec.Struct, frozen=True, kw_only=True):
    invitation_id: str
    organization_id: str
    email: str | None
    role: str
    created_by: str | None
    created_at: float
    expires_at: float
    used_at: float | None
    used_by: str | None

    def public(self) -> dict[str, Any]:
        return msgspec.structs.asdict(self)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _invitation(row: asyncpg.Record | None) -> Invitation | None:
    if row is None:
        return None
    return Invitation(
        invitation_id=row["id"],
        organization_id=row["organization_id"],
        email=row["email"],
        role=row["role"],
        created_by=row["created_by"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        used_at=row["used_at"],
        used_by=row["used_by"],
    )


class InvitationStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create(
        self, *, organization_id: str, role: str, email: str | None, created_by: str, ttl: float
    ) -> tuple[Invitation, str]:
        """A new invitation and its token (returned once, never stored)."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(24)
        row = await self._pool.fetchrow(
            f"""INSERT INTO invitations (id, token_hash, organization_id, email, role, created_by, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7)) RETURNING {_COLUMNS}""",
            uuid.uuid4().hex,
            hash_token(token),
            organization_id,
            email,
            role,
            created_by,
            float(ttl),
        )
        invitation = _invitation(row)
        assert invitation is not None
        return invitation, token

    async def claim(self, connection: Connection, token: str) -> Invitation | None:
        """Mark the invitation used, inside the caller's transaction; ``None`` when it is unknown,
        used or expired. ``used_by`` is set by :meth:`bind` once the account exists."""
        return _invitation(
            await connection.fetchrow(
                f"""UPDATE invitations SET used_at = now()
WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now() RETURNING {_COLUMNS}""",
                hash_token(token),
            )
        )

    async def bind(self, connection: Connection, invitation_id: str, user_id: str) -> None:
        await connection.execute("UPDATE invitations SET used_by = $2 WHERE id = $1", invitation_id, user_id)

    async def of_organization(self, organization_id: str) -> list[Invitation]:
        rows = await self._pool.fetch(
            f"SELECT {_COLUMNS} FROM invitations WHERE organization_id = $1 ORDER BY created_at",
            organization_id,
        )
        return [inv for inv in map(_invitation, rows) if inv is not None]
