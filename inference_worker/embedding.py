"""Answering an :class:`~broker.messages.EmbedRequest`: one Ollama ``/api/embed`` call for the
whole batch of inputs on a node that has the model, retried on another node while the node is
down or busy (an embedding has no partial answer, so any retryable failure may move)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import structlog

from broker.messages import EmbedRequest, Usage
from inference_worker.metrics import WorkerMetrics
from inference_worker.ollama import NodePool, NoHealthyNode, OllamaClient, OllamaError, StreamFailed
from inference_worker.replies import ReplyStream

__all__ = ["Embedder", "Embeddings"]

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class Embeddings:
    vectors: list[list[float]]
    usage: Usage
    node: str


class Embedder:
    """Embeds for one request at a time on the worker's node pool; shared by its requests."""

    def __init__(self, pool: NodePool, ollama: OllamaClient, metrics: WorkerMetrics) -> None:
        self._pool = pool
        self._ollama = ollama
        self._metrics = metrics

    async def answer(self, request: EmbedRequest, replies: ReplyStream) -> None:
        """Answer ``request`` on ``replies``: one done with the vectors, or an error."""
        started = time.time()
        if started > request.deadline:
            self._metrics.generations.labels("expired", request.model).inc()
            await replies.error("deadline_exceeded", "deadline passed")
            return
        try:
            async with asyncio.timeout(request.deadline - started):
                result = await self.run(request)
        except OllamaError as exc:
            self._metrics.generations.labels("error", request.model).inc()
            self._metrics.errors.labels(exc.code).inc()
            log.warning("embedding_failed", error=exc.code, detail=str(exc))
            await replies.error(exc.code, str(exc))
            return
        except TimeoutError:
            self._metrics.generations.labels("expired", request.model).inc()
            await replies.error("deadline_exceeded", "the embeddings did not finish in time")
            return
        await replies.done(
            replies.done_reply(
                model=request.model,
                done_reason="stop",
                usage=result.usage,
                node=result.node,
                embeddings=result.vectors,
            )
        )
        self._metrics.generations.labels("ok", request.model).inc()
        log.info("embedding_finished", model=request.model, inputs=len(request.input), node=result.node)

    async def run(self, request: EmbedRequest) -> Embeddings:
        """The vectors for ``request.input``; raises :class:`OllamaError` when no node could."""
        body: dict[str, Any] = {"model": request.model, "input": request.input, "truncate": request.truncate}
        if request.dimensions is not None:
            body["dimensions"] = request.dimensions
        tried: set[str] = set()
        last_error: OllamaError | None = None
        while True:
            try:
                node = await self._pool.acquire(
                    request.model, tried, timeout=max(0.1, request.deadline - time.time())
                )
            except NoHealthyNode:
                raise last_error or NoHealthyNode("no healthy model node is available") from None
            tried.add(node.url)
            try:
                answer = await self._ollama.embed(node, body)
            except OllamaError as exc:
                self._metrics.node_failures.labels(node.url, exc.code).inc()
                if exc.node_down:
                    self._pool.mark_failed(node)
                    self._metrics.node_up.labels(node.url).set(0)  # as a chat's failure does
                if exc.retry_elsewhere:
                    last_error = exc
                    log.warning("embed_node_failed_retrying", node=node.url, error=exc.code)
                    continue
                raise
            finally:
                await self._pool.release(node)
            self._pool.mark_ok(node)
            vectors = answer.get("embeddings")
            if not isinstance(vectors, list) or len(vectors) != len(request.input):
                raise StreamFailed(f"{node.url} answered /api/embed without one vector per input")
            return Embeddings(
                vectors=vectors,
                usage=Usage(
                    prompt_tokens=int(answer.get("prompt_eval_count") or 0),
                    total_duration_ns=int(answer.get("total_duration") or 0),
                    load_duration_ns=int(answer.get("load_duration") or 0),
                ),
                node=node.url,
            )
