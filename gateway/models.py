"""Which models a chat may ask for: ``ALLOWED_MODELS`` if set, else what the workers announce."""

from __future__ import annotations

import time

import structlog
from redis.exceptions import RedisError

from common.models import ModelRegistry

__all__ = ["ModelCatalog"]

log = structlog.get_logger(__name__)

CACHE_SECONDS = 5.0


class ModelCatalog:
    """The models clients may ask for, cached for a few seconds; empty means "not known yet:
    allow any" (the worker answers ``model_not_found`` for a model no node has)."""

    def __init__(self, registry: ModelRegistry, *, allowed: tuple[str, ...], default: str) -> None:
        self._registry = registry
        self._allowed = allowed
        self.default = default
        self._models: tuple[str, ...] = ()
        self._read_at = -1e9

    async def current(self) -> tuple[str, ...]:
        if self._allowed:
            return self._allowed
        now = time.monotonic()
        if now - self._read_at > CACHE_SECONDS:
            self._read_at = now
            try:
                self._models = await self._registry.available()
            except (RedisError, OSError) as exc:
                log.warning("models_unavailable", error=str(exc))
        return self._models

    async def listed(self) -> tuple[str, ...]:
        """For ``/v1/models``: the current models, or the default when none is known yet."""
        return await self.current() or (self.default,)
