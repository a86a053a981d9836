"""Generating one answer: :class:`ModelCaller` picks a model node, hands each piece of text to
``emit`` as the model produces it (the reply stream coalesces and publishes it, see
:mod:`inference_worker.replies`), and retries on another node only while no text was emitted (a
half-sent answer cannot be restarted without the client seeing text twice); the result is a
:class:`Completion`, the text so far a :class:`Progress`."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from broker.messages import ChatRequest, ToolCall, ToolFunction, Usage
from inference_worker.metrics import WorkerMetrics
from inference_worker.ollama import (
    NodePool,
    NoHealthyNode,
    OllamaClient,
    OllamaError,
    OllamaLine,
    OllamaNode,
    StreamFailed,
)

log = structlog.get_logger(__name__)

Emit = Callable[[str], Awaitable[None]]


@dataclass(slots=True)
class Completion:
    """A finished answer: its text, usage, why the model stopped, which node wrote it."""

    text: str
    usage: Usage
    done_reason: str
    node: str
    tool_calls: list[ToolCall] | None = None


@dataclass(slots=True)
class Progress:
    """The answer so far, as emitted (for partial usage when it is stopped early), and the tool
    calls the model made (sent with the done)."""

    parts: list[str] = field(default_factory=list)
    tokens: int = 0
    tool_calls: list[ToolCall] = field(default_factory=list)

    def text(self) -> str:
        return "".join(self.parts)


class ModelCaller:
    """Calls the model for one request at a time on the node pool (Ollama ``/api/chat``); one
    instance per worker, shared by all its requests."""

    def __init__(self, pool: NodePool, ollama: OllamaClient, metrics: WorkerMetrics) -> None:
        self._pool = pool
        self._ollama = ollama
        self._metrics = metrics

    async def run(
        self, request: ChatRequest, messages: list[dict[str, Any]], emit: Emit, progress: Progress
    ) -> Completion:
        """Stream ``messages`` through a node; ``emit`` gets each piece of text, ``progress`` the
        text so far.

        Raises :class:`OllamaError` when no node could produce the answer.
        """
        tried: set[str] = set()
        last_error: OllamaError | None = None
        options = request.options.to_ollama() if request.options else None
        extra: dict[str, Any] = {}
        if request.tools:
            extra["tools"] = request.tools
        if request.format is not None:
            extra["format"] = request.format
        while True:
            try:
                node = await self._pool.acquire(
                    request.model, tried, timeout=max(0.1, request.deadline - time.time())
                )
            except NoHealthyNode:
                raise last_error or NoHealthyNode("no healthy model node is available") from None
            tried.add(node.url)
            try:
                final = await self._stream(node, request, messages, options, extra, emit, progress)
            except OllamaError as exc:
                self._metrics.node_failures.labels(node.url, exc.code).inc()
                if exc.node_down:
                    self._pool.mark_failed(node)
                    self._metrics.node_up.labels(node.url).set(0)
                if exc.retry_elsewhere and not progress.parts:
                    progress.tokens = 0
                    progress.tool_calls.clear()
                    last_error = exc
                    log.warning("node_failed_retrying", node=node.url, error=exc.code)
                    continue
                raise
            finally:
                await self._pool.release(node)
            self._pool.mark_ok(node)
            self._metrics.node_up.labels(node.url).set(1)
            return self._finished(request, node, final, progress)

    async def _stream(
        self,
        node: OllamaNode,
        request: ChatRequest,
        messages: list[dict[str, Any]],
        options: dict[str, Any] | None,
        extra: dict[str, Any],
        emit: Emit,
        progress: Progress,
    ) -> OllamaLine:
        """One try on one node; returns Ollama's final line (the one with the usage counts)."""
        t0 = time.monotonic()
        first = True
        final: OllamaLine | None = None
        async with self._ollama.chat(node, request.model, messages, options, extra) as lines:
            async for line in lines:
                if line.message is not None and line.message.tool_calls:
                    progress.tool_calls.extend(
                        ToolCall(
                            function=ToolFunction(name=c.function.name, arguments=c.function.arguments),
                            id=c.id,
                        )
                        for c in line.message.tool_calls
                    )
                if line.message is not None and line.message.content:
                    if first:
                        elapsed = time.monotonic() - t0
                        self._metrics.node_latency.labels(node.url).observe(elapsed)
                        self._metrics.ttft.labels(request.model).observe(elapsed)
                        first = False
                    progress.tokens += 1
                    progress.parts.append(line.message.content)
                    await emit(line.message.content)
                if line.done:
                    final = line
        if final is None:
            raise StreamFailed("the model stream ended without its final line")
        return final

    def _finished(
        self, request: ChatRequest, node: OllamaNode, final: OllamaLine, progress: Progress
    ) -> Completion:
        self._metrics.tokens.labels(request.model).inc(final.eval_count)
        if final.eval_duration > 0:
            self._metrics.tokens_per_second.labels(request.model).observe(
                final.eval_count / (final.eval_duration / 1e9)
            )
        return Completion(
            text=progress.text(),
            usage=Usage(
                prompt_tokens=final.prompt_eval_count,
                completion_tokens=final.eval_count,
                total_duration_ns=final.total_duration,
                load_duration_ns=final.load_duration,
                prompt_eval_duration_ns=final.prompt_eval_duration,
                eval_duration_ns=final.eval_duration,
            ),
            done_reason=final.done_reason or "stop",
            node=node.url,
            tool_calls=self._tool_calls(request, progress),
        )

    @staticmethod
    def _tool_calls(request: ChatRequest, progress: Progress) -> list[ToolCall] | None:
        """The calls made, each with an id (Ollama may send none), one only without parallel calls."""
        calls = progress.tool_calls if request.parallel_tool_calls else progress.tool_calls[:1]
        return [
            ToolCall(function=c.function, id=c.id or f"call_{request.request_id[:16]}_{i}")
            for i, c in enumerate(calls)
        ] or None
