"""Reading the usage ledger (``GET /usage``); auth/ledger.py writes it from broker events."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

__all__ = ["GROUPINGS", "UsageReader"]

# group_by -> the SQL expression of the group's key (fixed strings, never user input).
GROUPINGS = {
    "day": "to_char(finished_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
    "model": "model",
    "user": "user_id",
    "key": "coalesce(key_id, '')",
    "organization": "organization_id",
}


class UsageReader:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def totals(
        self,
        *,
        start: datetime,
        end: datetime,
        group_by: str,
        organization_id: str | None = None,
        user_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """Token totals per group in ``[start, end)``, within one organization / one user when given."""
        expression = GROUPINGS[group_by]
        rows = await self._pool.fetch(
            f"""SELECT {expression} AS grp, count(*) AS requests, sum(prompt_tokens) AS prompt_tokens,
    sum(completion_tokens) AS completion_tokens
FROM usage
WHERE finished_at >= $1 AND finished_at < $2
  AND ($3::text IS NULL OR organization_id = $3) AND ($4::text IS NULL OR user_id = $4)
GROUP BY grp ORDER BY grp""",
            start,
            end,
            organization_id,
            user_id,
        )
        return [
            {
                group_by: row["grp"] or None,
                "requests": row["requests"],
                "prompt_tokens": int(row["prompt_tokens"]),
                "completion_tokens": int(row["completion_tokens"]),
                "total_tokens": int(row["prompt_tokens"]) + int(row["completion_tokens"]),
            }
            for row in rows
        ]
