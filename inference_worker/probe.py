"""Probing the model nodes: which models each one serves (``/api/tags``), and whether it answers."""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog
from redis.exceptions import RedisError

from common.models import ModelRegistry
from inference_worker.metrics import WorkerMetrics
from inference_worker.ollama import NodePool, OllamaClient, OllamaError, OllamaNode

log = structlog.get_logger(__name__)


class NodeProber:
    """Reads every node's models, once at start-up and then every ``interval`` seconds: a node
    that answers is healthy again, one that does not cools down. The models found are announced
    in Redis, where the gateways read which models exist."""

    def __init__(
        self,
        pool: NodePool,
        ollama: OllamaClient,
        models: ModelRegistry,
        metrics: WorkerMetrics,
        *,
        timeout: float,
        interval: float,
    ) -> None:
        self._pool = pool
        self._ollama = ollama
        self._models = models
        self._metrics = metrics
        self._timeout = timeout
        self._interval = interval

    async def probe(self) -> None:
        """Probe every node at once, then announce the models found."""
        await asyncio.gather(*(self._probe(node) for node in self._pool.nodes))
        models = self._pool.models()
        if models:
            with contextlib.suppress(RedisError, OSError):
                await self._models.announce(models)

    async def run(self) -> None:
        """Probe every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.probe()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("probe_failed")

    async def _probe(self, node: OllamaNode) -> None:
        try:
            node.models = await self._ollama.tags(node, timeout=self._timeout)
        except OllamaError as exc:
            if not node.cooling(time.monotonic()):
                log.warning("model_node_down", node=node.url, error=str(exc))
            self._pool.mark_failed(node)
            self._metrics.node_up.labels(node.url).set(0)
            return
        if node.consecutive_failures:
            log.info("model_node_back", node=node.url)
        self._pool.mark_ok(node)
        self._metrics.node_up.labels(node.url).set(1)
