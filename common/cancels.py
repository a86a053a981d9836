"""Cancel markers: the Redis half of a cancel, for workers that pick a request up after it ended.

The broker's cancel fanout reaches generations that are running; a request still waiting in the
queue when its client left is skipped by the worker that takes it, because the gateway also leaves
a marker here. Markers are scoped to the request's owner (``{u:<user_id>}``), so a cancel can only
ever name that user's own, server-generated request id.

A marker's value is the reason, and for a cancel with a grace period (a resumable stream whose
client went away) ``<reason>@<unix time>``: when the cancel takes effect. A worker that picks the
request up before then runs it and stops it at that time unless a resume (which clears the
marker) claims it first.
"""

from __future__ import annotations

import time
from typing import Any

from common.keyspace import Keyspace
from common.redis import RedisClient

__all__ = ["CancelMarkers"]


class CancelMarkers:
    def __init__(self, redis: RedisClient, keys: Keyspace) -> None:
        self._redis = redis
        self._keys = keys

    async def mark(self, user_id: str, request_id: str, reason: str, *, ttl: int, grace: float = 0.0) -> None:
        """Remember the cancel until nobody could still pick the request up (its deadline)."""
        value = reason if grace <= 0 else f"{reason}@{time.time() + grace:.3f}"
        await self._redis.set(self._keys.cancelled(user_id, request_id), value, ex=max(1, ttl))

    async def clear(self, user_id: str, request_id: str) -> None:
        """The request was resumed: its client is back."""
        await self._redis.delete(self._keys.cancelled(user_id, request_id))

    @staticmethod
    def effective_at(value: Any) -> float | None:
        """When a marker read by :meth:`queue_check` takes effect (0: at once; None: no marker)."""
        if value is None:
            return None
        text = value.decode() if isinstance(value, bytes) else str(value)
        _, _, at = text.partition("@")
        try:
            return float(at) if at else 0.0
        except ValueError:
            return 0.0

    async def is_marked(self, user_id: str, request_id: str) -> bool:
        return bool(await self._redis.exists(self._keys.cancelled(user_id, request_id)))

    def queue_check(self, pipe: Any, user_id: str, request_id: str) -> None:
        """Add the check to a caller's pipeline (one round trip with other reads); pass its result
        to :meth:`effective_at`."""
        pipe.get(self._keys.cancelled(user_id, request_id))
