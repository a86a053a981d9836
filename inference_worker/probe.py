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


# A failed node is asked again this often (at most), until it answers: a node back from a
# restart takes traffic within about this long, whatever its cooldown and the probe interval.
RECHECK_INTERVAL_SECONDS = 0.5


class NodeProber:
    """Reads every node's models, once at start-up and then every ``interval`` seconds: a node
    that answers is healthy again, one that does not cools down. A node that failed (a probe or a
    generation marked it) is probed again every ``recheck_interval`` seconds until it answers, so
    its return is noticed at once rather than at the end of its cooldown. The models found are
    announced in Redis, where the gateways read which models exist."""

    def __init__(
        self,
        pool: NodePool,
        ollama: OllamaClient,
        models: ModelRegistry,
        metrics: WorkerMetrics,
        *,
        timeout: float,
        interval: float,
        recheck_interval: float = RECHECK_INTERVAL_SECONDS,
    ) -> None:
        self._pool = pool
        self._ollama = ollama
        self._models = models
        self._metrics = metrics
        self._timeout = timeout
        self._interval = interval
        self._recheck = min(recheck_interval, interval)

    async def probe(self) -> None:
        """Probe every node at once, then announce the models found."""
        await asyncio.gather(*(self._probe(node) for node in self._pool.nodes))
        await self._announce()

    async def recheck(self) -> None:
        """Probe the nodes that are down (failed, cooling), if any; announce when one is back."""
        now = time.monotonic()
        failed = [n for n in self._pool.nodes if n.consecutive_failures or n.cooling(now)]
        if any(await asyncio.gather(*(self._probe(node) for node in failed))):
            await self._announce()

    async def run(self) -> None:
        """Probe every node every ``interval`` seconds, failed ones every ``recheck_interval``,
        until cancelled."""
        loop = asyncio.get_running_loop()
        next_full = loop.time() + self._interval
        while True:
            await asyncio.sleep(min(self._recheck, max(0.0, next_full - loop.time())))
            try:
                if loop.time() >= next_full:
                    next_full = loop.time() + self._interval
                    await self.probe()
                else:
                    await self.recheck()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("probe_failed")

    async def _announce(self) -> None:
        models = self._pool.models()
        if models:
            with contextlib.suppress(RedisError, OSError):
                await self._models.announce(models)

    async def _probe(self, node: OllamaNode) -> bool:
        """Read the node's models; True when it answered (it is healthy again)."""
        try:
            node.models = await self._ollama.tags(node, timeout=self._timeout)
        except OllamaError as exc:
            if not node.cooling(time.monotonic()):
                log.warning("model_node_down", node=node.url, error=str(exc))
            self._pool.mark_failed(node)
            self._metrics.node_up.labels(node.url).set(0)
            return False
        if node.consecutive_failures:
            log.info("model_node_back", node=node.url)
        self._pool.mark_ok(node)
        self._metrics.node_up.labels(node.url).set(1)
        return True
