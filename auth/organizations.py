"""Organizations in PostgreSQL: created by a platform admin (API or CLI), or personal ones by open
sign-up. A name is unique in its folded form (auth/schemas.py ``fold_organization``), so "ACME"
and "acme" are one organization; registering with a taken name never joins it.

``allowed_domains``: an email of one of these domains may self-register into the organization.
``monthly_token_quota``: when set, the ledger marks the organization exhausted once its usage in
the calendar month (UTC) reaches it (auth/ledger.py), and gateways refuse new chats with 429.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
import msgspec

from auth.database import Connection
from auth.schemas import fold_organization

__all__ = ["Organization", "OrganizationStore", "OrganizationTaken"]

_COLUMNS = """id, name, allowed_domains, monthly_token_quota, personal,
    extract(epoch FROM created_at)::float8 AS created_at"""


class OrganizationTaken(Exception):
    pass


class Organization(msgspec.Struct, frozen=True, kw_only=True):
    organization_id: str
    name: str
    allowed_domains: tuple[str, ...]
    monthly_token_quota: int | None
    personal: bool
    created_at: float

    def public(self) -> dict[str, Any]:
        return {
            "organization_id": self.organization_id,
            "name": self.name,
            "allowed_domains": list(self.allowed_domains),
            "monthly_token_quota": self.monthly_token_quota,
            "personal": self.personal,
            "created_at": self.created_at,
        }


def _organization(row: asyncpg.Record | None) -> Organization | None:
    if row is None:
        return None
    return Organization(
        organization_id=row["id"],
        name=row["name"],
        allowed_domains=tuple(row["allowed_domains"]),
        monthly_token_quota=row["monthly_token_quota"],
        personal=row["personal"],
        created_at=row["created_at"],
    )


class OrganizationStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create(
        self,
        name: str,
        *,
        allowed_domains: Sequence[str] = (),
        monthly_token_quota: int | None = None,
        personal: bool = False,
        connection: Connection | None = None,
    ) -> Organization:
        """A new organization; :class:`OrganizationTaken` when the (folded) name exists."""
        query = f"""INSERT INTO organizations (id, name, name_folded, allowed_domains, monthly_token_quota,
personal) VALUES ($1, $2, $3, $4, $5, $6) RETURNING {_COLUMNS}"""
        args = (uuid.uuid4().hex, name, fold_organization(name), list(allowed_domains), monthly_token_quota)
        try:
            row = await (connection or self._pool).fetchrow(query, *args, personal)
        except asyncpg.UniqueViolationError:
            raise OrganizationTaken(name) from None
        organization = _organization(row)
        assert organization is not None
        return organization

    async def get(self, organization_id: str) -> Organization | None:
        return _organization(
            await self._pool.fetchrow(f"SELECT {_COLUMNS} FROM organizations WHERE id = $1", organization_id)
        )

    async def find_by_name(self, name: str) -> Organization | None:
        return _organization(
            await self._pool.fetchrow(
                f"SELECT {_COLUMNS} FROM organizations WHERE name_folded = $1", fold_organization(name)
            )
        )

    async def for_email_domain(self, domain: str) -> Organization | None:
        """The organization that allows self-registration from ``domain`` (the oldest, should two
        allow the same domain)."""
        return _organization(
            await self._pool.fetchrow(
                f"""SELECT {_COLUMNS} FROM organizations WHERE allowed_domains @> ARRAY[$1::text]
ORDER BY created_at LIMIT 1""",
                domain.lower(),
            )
        )

    async def all(self) -> list[Organization]:
        rows = await self._pool.fetch(f"SELECT {_COLUMNS} FROM organizations ORDER BY created_at, id")
        return [org for org in map(_organization, rows) if org is not None]

    async def update(
        self,
        organization_id: str,
        *,
        allowed_domains: Sequence[str] | None = None,
        monthly_token_quota: int | None = None,
        clear_quota: bool = False,
    ) -> Organization | None:
        return _organization(
            await self._pool.fetchrow(
                f"""UPDATE organizations SET
    allowed_domains = coalesce($2, allowed_domains),
    monthly_token_quota = CASE WHEN $4 THEN NULL ELSE coalesce($3, monthly_token_quota) END
WHERE id = $1 RETURNING {_COLUMNS}""",
                organization_id,
                None if allowed_domains is None else list(allowed_domains),
                monthly_token_quota,
                clear_quota,
            )
        )
