"""Monthly token quotas at the gateway: the organizations whose quota is used up, refreshed from
Redis every ``QUOTA_REFRESH_SECONDS`` by one background task, so checking a request costs no
round trip. The usage ledger computes the list (auth/ledger.py); the check lags the ledger by a
few seconds, so an organization may overshoot its quota by what it generates meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import math
from datetime import UTC, datetime

import structlog
from redis.exceptions import RedisError

from common.keyspace import Keyspace
from common.redis import RedisClient

__all__ = ["QuotaWatch", "seconds_to_next_month"]

log = structlog.get_logger(__name__)


class QuotaWatch:
    def __init__(self, redis: RedisClient, keys: Keyspace, *, interval: float) -> None:
        self._redis = redis
        self._key = keys.quota_exhausted()
        self._interval = interval
        self._exhausted: frozenset[str] = frozenset()

    def exhausted(self, org_id: str) -> bool:
        return org_id in self._exhausted

    async def refresh(self) -> None:
        raw = await self._redis.get(self._key)
        try:
            orgs = json.loads(raw) if raw is not None else []
        except ValueError:
            orgs = []
        self._exhausted = frozenset(str(org) for org in orgs) if isinstance(orgs, list) else frozenset()

    async def run(self) -> None:
        """Refresh until cancelled; a Redis error keeps the last known list."""
        while True:
            try:
                await self.refresh()
            except (RedisError, OSError) as exc:
                log.warning("quota_refresh_failed", error=str(exc))
            await asyncio.sleep(self._interval)


def seconds_to_next_month(now: datetime | None = None) -> int:
    """Until the quota month (UTC) turns over: the ``Retry-After`` of ``quota_exceeded``."""
    now = now or datetime.now(UTC)
    year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
    return max(1, math.ceil((datetime(year, month, 1, tzinfo=UTC) - now).total_seconds()))
