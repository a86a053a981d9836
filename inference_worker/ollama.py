"""Ollama HTTP client with node routing: least-busy healthy node, cooldown of failing nodes.

Generation uses ``/api/chat`` with ``stream: true`` over one pooled keep-alive ``ClientSession``.
Closing the response (the generator being closed or cancelled) closes the connection, which is
how Ollama is told to stop generating.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec


class OllamaToolFunction(msgspec.Struct):
    name: str = ""
    arguments: dict[str, Any] = msgspec.field(default_factory=dict)


class OllamaToolCall(msgspec.Struct):
    function: OllamaToolFunction
    id: str | None = None


class OllamaMessage(msgspec.Struct):
    role: str = "assistant"
    content: str = ""
    tool_calls: list[OllamaToolCall] | None = None


class OllamaLine(msgspec.Struct, kw_only=True):
    """One NDJSON line of ``/api/chat``; the last has ``done`` and the usage counters."""

    model: str = ""
    message: OllamaMessage | None = None
    done: bool = False
    done_reason: str | None = None
    total_duration: int = 0
    load_duration: int = 0
    prompt_eval_count: int = 0
    prompt_eval_duration: int = 0
    eval_count: int = 0
    eval_duration: int = 0
    error: str | None = None


_line_decoder = msgspec.json.Decoder(OllamaLine)
_encoder = msgspec.json.Encoder()


class OllamaError(Exception):
    """Base of upstream failures; ``code`` is the machine-readable error sent to clients,
    ``retry_elsewhere`` whether another node may answer instead (only before any text went out),
    ``node_down`` whether the node should cool down."""

    code = "model_error"
    retry_elsewhere = False
    node_down = False


class NodeUnavailable(OllamaError):
    """Connection failed, timed out, or the node answered 5xx: try another node, cool this one."""

    code = "model_unavailable"
    retry_elsewhere = True
    node_down = True


class NodeBusy(OllamaError):
    """Ollama's 503 "server busy": the node is alive but its queue is full."""

    code = "model_busy"
    retry_elsewhere = True


class ModelNotFound(OllamaError):
    code = "model_not_found"


class BadUpstreamRequest(OllamaError):
    code = "model_rejected_request"


class StreamFailed(OllamaError):
    """The node reported an error in the middle of the stream, or sent something unreadable."""

    code = "model_stream_failed"
    retry_elsewhere = True
    node_down = True


class NodeFailed(StreamFailed):
    """The node went away in the middle of the answer: the connection broke, stalled past the read
    timeout, or closed before the last line. Before the first token another node answers instead;
    after it, the client is told that the model node failed (its own code)."""

    code = "model_node_failed"


class NoHealthyNode(OllamaError):
    code = "no_model_node"


@dataclass(slots=True)
class OllamaNode:
    url: str
    in_flight: int = 0
    cooldown_until: float = 0.0
    consecutive_failures: int = 0
    models: frozenset[str] | None = None  # None until /api/tags was read
    served: int = 0

    def cooling(self, now: float) -> bool:
        return now < self.cooldown_until

    def has(self, model: str) -> bool:
        return self.models is None or model in self.models or f"{model}:latest" in self.models


# One NDJSON line of Ollama's stream holds one token (or the final statistics): far below this.
MAX_LINE_BYTES = 1 << 20


class NodePool:
    """Routes generations to nodes: least busy first, within each node's parallel limit.

    A node that fails (connection error, 5xx, broken stream) cools down with growing back-off;
    Ollama's 503 "server busy" means alive but full, so the node is only skipped for that request.
    When every node that has the model is at its limit, callers wait for a free slot.
    Owned by one worker process.
    """

    def __init__(self, nodes: list[OllamaNode], *, cooldown: float, max_parallel: int = 0) -> None:
        self.nodes = nodes
        self.cooldown = cooldown
        self.max_parallel = max_parallel
        self._freed = asyncio.Condition()
        self._rr = 0

    @classmethod
    def from_urls(cls, urls: Sequence[str], *, cooldown: float, max_parallel: int = 0) -> NodePool:
        return cls([OllamaNode(u) for u in urls], cooldown=cooldown, max_parallel=max_parallel)

    def _full(self, node: OllamaNode) -> bool:
        return self.max_parallel > 0 and node.in_flight >= self.max_parallel

    def pick(self, model: str, exclude: set[str]) -> OllamaNode | None:
        """The least busy healthy node with the model and a free slot, or None."""
        now = time.monotonic()
        candidates = [
            n
            for n in self.nodes
            if n.url not in exclude and not n.cooling(now) and n.has(model) and not self._full(n)
        ]
        if not candidates:
            return None
        self._rr = (self._rr + 1) % len(candidates)  # rotate among equals so idle nodes share load
        rotated = candidates[self._rr :] + candidates[: self._rr]
        return min(rotated, key=lambda n: n.in_flight)

    def could_serve(self, model: str, exclude: set[str]) -> bool:
        """Some healthy node has the model (perhaps busy): worth waiting for a slot."""
        now = time.monotonic()
        return any(n.url not in exclude and not n.cooling(now) and n.has(model) for n in self.nodes)

    async def acquire(self, model: str, exclude: set[str], *, timeout: float) -> OllamaNode:
        """Reserve a slot on the best node, waiting up to ``timeout`` when all are full."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with self._freed:
            while True:
                node = self.pick(model, exclude)
                if node is not None:
                    node.in_flight += 1
                    node.served += 1
                    return node
                if not self.could_serve(model, exclude):
                    known = [n for n in self.nodes if n.models is not None]
                    if known and len(known) == len(self.nodes) and not any(n.has(model) for n in known):
                        raise ModelNotFound(f"model {model!r} is not available on any model node")
                    raise NoHealthyNode(f"no healthy model node serves {model!r}")
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise NodeBusy("every model node is at its parallel limit")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._freed.wait(), timeout=min(remaining, 1.0))

    async def release(self, node: OllamaNode) -> None:
        node.in_flight -= 1
        async with self._freed:
            # Every waiter re-checks: the first one may want another model or exclude this node.
            self._freed.notify_all()

    def mark_failed(self, node: OllamaNode) -> None:
        node.consecutive_failures += 1
        backoff = self.cooldown * min(2 ** (node.consecutive_failures - 1), 8)
        node.cooldown_until = time.monotonic() + backoff

    def mark_ok(self, node: OllamaNode) -> None:
        node.consecutive_failures = 0
        node.cooldown_until = 0.0

    def healthy_count(self) -> int:
        now = time.monotonic()
        return sum(1 for n in self.nodes if not n.cooling(now))

    def models(self) -> set[str]:
        """Every model some healthy node reported."""
        now = time.monotonic()
        return {m for n in self.nodes if not n.cooling(now) and n.models for m in n.models}


class OllamaClient:
    """Streams chat completions from one chosen node."""

    def __init__(self, session: aiohttp.ClientSession, *, read_timeout: float) -> None:
        self._session = session
        self._read_timeout = read_timeout

    @asynccontextmanager
    async def chat(
        self,
        node: OllamaNode,
        model: str,
        messages: list[dict[str, Any]],
        options: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> AsyncIterator[AsyncIterator[OllamaLine]]:
        """Open a streaming chat on ``node``; yields an iterator of decoded lines. ``extra``:
        more fields of the request body (``tools``, ``format``)."""
        body: dict[str, Any] = {"model": model, "messages": messages, "stream": True, **(extra or {})}
        if options:
            body["options"] = options
        try:
            response = await self._session.post(
                f"{node.url}/api/chat",
                data=_encoder.encode(body),
                headers={"Content-Type": "application/json"},
                timeout=aiohttp.ClientTimeout(total=None, sock_read=self._read_timeout),
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise NodeUnavailable(f"{node.url}: {exc.__class__.__name__}: {exc}") from exc
        try:
            await _raise_for_status(response, model)
            yield self._lines(response)
        finally:
            response.close()

    async def _lines(self, response: aiohttp.ClientResponse) -> AsyncIterator[OllamaLine]:
        # Reads whatever has arrived and splits it into lines here: one read per network chunk
        # rather than one readline() per token (this runs for every token of every answer).
        pending = b""
        try:
            async for chunk in response.content.iter_any():
                *complete, pending = (pending + chunk).split(b"\n")
                if len(pending) > MAX_LINE_BYTES:  # a node that never ends its line: not Ollama
                    raise NodeFailed(f"the model node sent a line over {MAX_LINE_BYTES} bytes")
                for raw in complete:
                    line = _decode_line(raw)
                    if line is not None:
                        yield line
                        if line.done:
                            return
            line = _decode_line(pending)  # a last line without its newline
            if line is not None:
                yield line
                if line.done:
                    return
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise NodeFailed(f"the model node failed mid-answer: {exc.__class__.__name__}: {exc}") from exc
        raise NodeFailed("the model node closed the stream before the answer was complete")

    async def embed(self, node: OllamaNode, body: dict[str, Any]) -> dict[str, Any]:
        """One ``/api/embed`` call (``body``: model, input, truncate, dimensions); its JSON answer."""
        try:
            async with self._session.post(
                f"{node.url}/api/embed",
                data=_encoder.encode(body),
                headers={"Content-Type": "application/json"},
                timeout=aiohttp.ClientTimeout(total=None, sock_read=self._read_timeout),
            ) as response:
                await _raise_for_status(response, str(body.get("model", "")))
                return msgspec.json.decode(await response.read(), type=dict[str, Any])
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise NodeUnavailable(f"{node.url}: {exc.__class__.__name__}: {exc}") from exc
        except msgspec.DecodeError as exc:
            raise StreamFailed(f"undecodable /api/embed answer from {node.url}: {exc}") from exc

    async def tags(self, node: OllamaNode, timeout: float = 5.0) -> frozenset[str]:
        """Model names the node has (``/api/tags``)."""
        try:
            async with self._session.get(
                f"{node.url}/api/tags", timeout=aiohttp.ClientTimeout(total=timeout)
            ) as response:
                if response.status != 200:
                    raise NodeUnavailable(f"{node.url}/api/tags answered {response.status}")
                payload = msgspec.json.decode(await response.read(), type=dict[str, Any])
        except (aiohttp.ClientError, TimeoutError, msgspec.DecodeError) as exc:
            raise NodeUnavailable(f"{node.url}: {exc}") from exc
        names: set[str] = set()
        for entry in payload.get("models", []):
            for key in ("name", "model"):
                value = entry.get(key)
                if isinstance(value, str):
                    names.add(value)
                    names.add(value.removesuffix(":latest"))
        return frozenset(names)


def _decode_line(raw: bytes) -> OllamaLine | None:
    """One NDJSON line of a chat stream; None for a blank line."""
    if not raw.strip():
        return None
    try:
        line = _line_decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise StreamFailed(f"undecodable line from model node: {exc}") from exc
    if line.error is not None:
        raise StreamFailed(line.error)
    return line


async def _raise_for_status(response: aiohttp.ClientResponse, model: str) -> None:
    if response.status == 200:
        return
    try:
        detail = msgspec.json.decode(await response.read(), type=dict[str, Any]).get("error", "")
    except (TimeoutError, msgspec.DecodeError, aiohttp.ClientError):
        detail = ""
    message = f"model node answered {response.status}: {detail}".strip()
    if response.status == 404:
        raise ModelNotFound(f"model {model!r} is not available: {detail}")
    if response.status == 503:
        raise NodeBusy(message)
    if response.status >= 500:
        raise NodeUnavailable(message)
    raise BadUpstreamRequest(message)
