"""The models the workers can serve right now, shared with the gateways through Redis.

Workers probe their Ollama nodes and announce the models they saw on healthy nodes; gateways
validate a chat's ``model`` against the models announced recently. One sorted set, model name ->
time last seen, so a model whose last node went away drops out after ``freshness`` seconds.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from common.keyspace import Keyspace
from common.redis import RedisClient

__all__ = ["ModelRegistry"]

DEFAULT_FRESHNESS = 60.0


class ModelRegistry:
    def __init__(self, redis: RedisClient, keys: Keyspace, *, freshness: float = DEFAULT_FRESHNESS) -> None:
        self._redis = redis
        self._keys = keys
        self._freshness = freshness

    async def announce(self, models: Iterable[str], *, now: float | None = None) -> None:
        """A worker saw these models on a healthy node just now."""
        seen = dict.fromkeys(models, time.time() if now is None else now)
        if seen:
            await self._redis.zadd(self._keys.models_available(), seen)

    async def available(self, *, now: float | None = None) -> tuple[str, ...]:
        """Models some worker saw within the freshness window, sorted; empty when none is known."""
        since = (time.time() if now is None else now) - self._freshness
        raw = await self._redis.zrangebyscore(self._keys.models_available(), since, "+inf")
        return tuple(sorted(m.decode() if isinstance(m, bytes) else str(m) for m in raw))
