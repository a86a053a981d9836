"""The audit log: append-only records of who did what (logins, failed logins, API keys,
invitations, role changes, disables, admin reads of others' data).

Nothing in the API edits or deletes an entry, and the database refuses it too (a trigger, see
auth/migrations). Platform admins read it with ``GET /admin/audit``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog

from auth.database import Connection

__all__ = ["AuditLog"]

log = structlog.get_logger(__name__)


class AuditLog:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def record(
        self,
        action: str,
        *,
        actor_id: str | None = None,
        organization_id: str | None = None,
        target_id: str | None = None,
        client_ip: str | None = None,
        connection: Connection | None = None,
        **details: Any,
    ) -> None:
        await (connection or self._pool).execute(
            """INSERT INTO audit_log (action, actor_id, organization_id, target_id, client_ip, details)
VALUES ($1, $2, $3, $4, $5, $6::jsonb)""",
            action,
            actor_id,
            organization_id,
            target_id,
            client_ip,
            json.dumps(details, default=str),
        )

    async def page(
        self,
        *,
        after: int = 0,
        limit: int = 100,
        organization_id: str | None = None,
        action: str | None = None,
        actor_id: str | None = None,
    ) -> tuple[list[dict[str, Any]], int | None]:
        """Entries in order, ``limit`` at a time after entry id ``after``; returns the next cursor."""
        rows = await self._pool.fetch(
            """SELECT id, at, action, actor_id, organization_id, target_id, client_ip, details::text
FROM audit_log
WHERE id > $1 AND ($2::text IS NULL OR organization_id = $2) AND ($3::text IS NULL OR action = $3)
  AND ($4::text IS NULL OR actor_id = $4)
ORDER BY id LIMIT $5""",
            after,
            organization_id,
            action,
            actor_id,
            limit + 1,
        )
        entries = [
            {
                "id": row["id"],
                "at": row["at"].astimezone(UTC).isoformat(),
                "action": row["action"],
                "actor_id": row["actor_id"],
                "organization_id": row["organization_id"],
                "target_id": row["target_id"],
                "client_ip": row["client_ip"],
                "details": json.loads(row["details"]),
            }
            for row in rows[:limit]
        ]
        next_cursor = entries[-1]["id"] if len(rows) > limit else None
        return entries, next_cursor


def utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)
