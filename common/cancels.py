"""Cancel markers: the Redis half of a cancel, for workers that pick a request up after it ended.

The broker's cancel fanout reaches generations that are running; a request still waiting in the
queue when its client left is skipped by the worker that takes it, because the gateway also leaves
a marker here. Markers are scoped to the request's owner (``{u:<user_id>}``), so a cancel can only
ever name that user's own, server-generated request id.
"""

from __future__ import annotations

from typing import Any

from common.keyspace import Keyspace
from common.redis import RedisClient

__all__ = ["CancelMarkers"]


class CancelMarkers:
    def __init__(self, redis: RedisClient, keys: Keyspace) -> None:
        self._redis = redis
        self._keys = keys

    async def mark(self, user_id: str, request_id: str, reason: str, *, ttl: int) -> None:
        """Remember the cancel until nobody could still pick the request up (its deadline)."""
        await self._redis.set(self._keys.cancelled(user_id, request_id), reason, ex=max(1, ttl))

    async def is_marked(self, user_id: str, request_id: str) -> bool:
        return bool(await self._redis.exists(self._keys.cancelled(user_id, request_id)))

    def queue_check(self, pipe: Any, user_id: str, request_id: str) -> None:
        """Add the check to a caller's pipeline (one round trip with other reads); its result is
        truthy when the request was cancelled."""
        pipe.exists(self._keys.cancelled(user_id, request_id))
