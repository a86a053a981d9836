"""An Ollama-API simulator: Ollama's wire format, configurable timing, deterministic text.

Serves ``/api/chat`` (NDJSON stream or one JSON body; ``tools`` and ``format`` as in
:mod:`inference_worker.simulator_structured`), ``/api/generate``, ``/api/embed`` (and the older
``/api/embeddings``), ``/api/show``, ``/api/tags``, ``/api/ps``, ``/api/version`` and ``/`` like
Ollama, plus ``/sim/stats``, ``/sim/reset``, ``/sim/config`` and ``/sim/chats`` (the last ``/api/chat``
bodies received, oldest first) for tests.
Run it with ``python -m inference_worker.simulator --port 11435``.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from common.logging import configure_logging
from common.runtime import forever, run, serving
from inference_worker.simulator_metrics import render
from inference_worker.simulator_structured import embedding, json_answer, tool_calls_for
from inference_worker.simulator_text import (
    canonical_model,
    expected_answer,
    expected_tokens,
    generate_tokens,
    model_details,
    prompt_token_count,
    stop_at,
)

__all__ = [
    "BUSY_ERROR",
    "STATE_KEY",
    "SimulatorConfig",
    "SimulatorState",
    "SimulatorStats",
    "create_simulator_app",
    "expected_answer",
    "expected_tokens",
    "main",
]

SIMULATOR_VERSION = "0.12.0-sim"
BUSY_ERROR = "server busy, please try again.  maximum pending requests exceeded"
KEEP_ALIVE_SECONDS = 300.0  # Ollama keeps a model loaded for 5 minutes after its last use

_Outcome = Literal["completed", "failed", "aborted"]


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    """The simulator's knobs; ``tokens_per_second=0`` streams as fast as possible."""

    models: tuple[str, ...] = ("llama3.2", "qwen2.5")
    ttft_ms: float = 20.0
    tokens_per_second: float = 200.0
    answer_tokens: int = 24
    max_queue: int = 512  # generations in flight before 503, like OLLAMA_MAX_QUEUE
    fail_after_tokens: int | None = None  # stream this many tokens, then an error line
    embedding_dimensions: int = 64  # length of /api/embed vectors (``dimensions`` shortens them)
    # Answer exactly this text (one token per word, its spacing kept) instead of generated words:
    # a test makes the "model" say what it needs (hostile Markdown for the page's XSS test).
    answer_text: str | None = None

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError("models must not be empty")
        if self.ttft_ms < 0 or self.tokens_per_second < 0:
            raise ValueError("ttft_ms and tokens_per_second must be >= 0")
        if self.answer_tokens < 1 or self.max_queue < 1:
            raise ValueError("answer_tokens and max_queue must be >= 1")
        if self.fail_after_tokens is not None and self.fail_after_tokens < 0:
            raise ValueError("fail_after_tokens must be >= 0 or null")


@dataclass(slots=True)
class SimulatorStats:
    generations_started: int = 0
    generations_completed: int = 0
    generations_aborted: int = 0  # the client went away mid-generation
    generations_failed: int = 0  # fail_after_tokens fired
    requests_rejected: int = 0  # 503 server busy
    tokens_generated: int = 0
    in_flight: int = 0

    def reset(self) -> None:
        """Zero the counters in place; ``in_flight`` counts live generations and is kept."""
        for counter in fields(self):
            if counter.name != "in_flight":
                setattr(self, counter.name, 0)

    def finish(self, outcome: _Outcome) -> None:
        self.in_flight -= 1
        if outcome == "completed":
            self.generations_completed += 1
        elif outcome == "failed":
            self.generations_failed += 1
        else:
            self.generations_aborted += 1


CHATS_KEPT = 64  # /api/chat bodies kept for /sim/chats


@dataclass(slots=True)
class SimulatorState:
    config: SimulatorConfig
    stats: SimulatorStats = field(default_factory=SimulatorStats)
    last_used: dict[str, float] = field(default_factory=dict)  # canonical model -> time.time()
    # The last /api/chat bodies, as received: what a caller really sent (tests read the messages).
    chats: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=CHATS_KEPT))
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))


STATE_KEY = web.AppKey("simulator_state", SimulatorState)


class _Message(msgspec.Struct):
    role: str
    content: str = ""
    tool_calls: list[dict[str, Any]] | None = None
    tool_name: str | None = None


class _ChatRequest(msgspec.Struct):
    model: str = ""
    messages: list[_Message] | None = None
    stream: bool | None = None  # Ollama streams unless told "stream": false
    options: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    format: str | dict[str, Any] | None = None
    keep_alive: str | int | float | None = None


class _GenerateRequest(msgspec.Struct):
    model: str = ""
    prompt: str | None = None
    system: str | None = None
    stream: bool | None = None
    options: dict[str, Any] | None = None
    format: str | dict[str, Any] | None = None
    keep_alive: str | int | float | None = None


class _EmbedRequest(msgspec.Struct):
    model: str = ""
    input: str | list[str] | None = None
    truncate: bool = True
    dimensions: int | None = None
    keep_alive: str | int | float | None = None


class _EmbeddingsRequest(msgspec.Struct):
    model: str = ""
    prompt: str = ""


class _ShowRequest(msgspec.Struct):
    model: str = ""
    name: str = ""  # the older spelling


_chat_decoder = msgspec.json.Decoder(_ChatRequest)
_generate_decoder = msgspec.json.Decoder(_GenerateRequest)
_embed_decoder = msgspec.json.Decoder(_EmbedRequest)
_embeddings_decoder = msgspec.json.Decoder(_EmbeddingsRequest)
_show_decoder = msgspec.json.Decoder(_ShowRequest)
_JSON_PIECE = 8  # characters of a JSON answer per streamed token
_object_decoder = msgspec.json.Decoder(dict[str, Any])
_encoder = msgspec.json.Encoder()
_CONFIG_FIELDS = frozenset(f.name for f in fields(SimulatorConfig))
_WORD_START = re.compile(r"(?<=\s)(?=\S)")  # splits "a  b\nc" into "a  ", "b\n", "c"


def _rfc3339(moment: datetime | None = None) -> str:
    return (moment or datetime.now(UTC)).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _json(payload: object, status: int = 200) -> web.Response:
    return web.Response(body=_encoder.encode(payload), status=status, content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


def _chunk(
    model: str, content: str, *, done: bool, tool_calls: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {"model": model, "created_at": _rfc3339(), "message": message, "done": done}


def _generate_chunk(model: str, content: str, *, done: bool, **_: Any) -> dict[str, Any]:
    return {"model": model, "created_at": _rfc3339(), "response": content, "done": done}


class _Generation:
    """One accepted ``/api/chat`` call: paces its tokens and writes them in Ollama's format."""

    def __init__(
        self, request: web.Request, config: SimulatorConfig, body: _ChatRequest, *, generate: bool = False
    ) -> None:
        self.received = time.perf_counter_ns()
        self.request = request
        self.config = config
        self.model = body.model  # echoed back as the client spelled it, like Ollama
        self.stream = body.stream is not False
        self._chunk = _generate_chunk if generate else _chunk
        turns = [(m.role, m.content) for m in body.messages or ()]
        self.prompt_eval_count = prompt_token_count(turns)
        if config.answer_text:
            self.tokens = _WORD_START.split(config.answer_text)
        else:
            self.tokens = generate_tokens(body.model, turns, config.answer_tokens)
        self.tool_calls: list[dict[str, Any]] = []
        if body.tools:
            messages = [{"role": m.role, "content": m.content} for m in body.messages or ()]
            self.tool_calls = tool_calls_for(body.tools, messages, canonical_model(body.model))
            self.prompt_eval_count += 10 * len(body.tools)
        if self.tool_calls:
            self.tokens = []
        elif body.format:
            last_user = next((c for r, c in reversed(turns) if r == "user"), "")
            text = json_answer(body.format, canonical_model(body.model), last_user, self.tokens)
            self.tokens = [text[i : i + _JSON_PIECE] for i in range(0, len(text), _JSON_PIECE)]
        self.done_reason = "stop"
        num_predict = (body.options or {}).get("num_predict")
        if isinstance(num_predict, int) and 0 < num_predict < len(self.tokens):
            self.tokens, self.done_reason = self.tokens[:num_predict], "length"
        stop = (body.options or {}).get("stop")
        stops = [stop] if isinstance(stop, str) else [s for s in stop or () if isinstance(s, str)]
        if stops and (cut := stop_at(self.tokens, stops)) is not None:
            self.tokens, self.done_reason = cut, "stop"
        self.response: web.StreamResponse | None = None
        self.outcome: _Outcome = "aborted"  # kept unless the generation ends on its own

    async def run(self, stats: SimulatorStats) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        prompt_start = time.perf_counter_ns()
        await asyncio.sleep(self.config.ttft_ms / 1000)
        eval_start = time.perf_counter_ns()
        first_token_at = loop.time()
        interval = 1 / self.config.tokens_per_second if self.config.tokens_per_second > 0 else 0.0
        for i, token in enumerate(self.tokens):
            if i == self.config.fail_after_tokens:
                return await self._fail(i)
            delay = first_token_at + i * interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if self.stream:
                await self._write_line(self._chunk(self.model, token, done=False))
            stats.tokens_generated += 1
        if self.tool_calls and self.stream:  # Ollama streams the calls in a chunk of their own
            await self._write_line(_chunk(self.model, "", done=False, tool_calls=self.tool_calls))
        end = time.perf_counter_ns()
        done = self._chunk(
            self.model,
            "" if self.stream else "".join(self.tokens),
            done=True,
            tool_calls=None if self.stream else self.tool_calls,
        )
        done |= {
            "done_reason": self.done_reason,
            "total_duration": end - self.received,
            "load_duration": prompt_start - self.received,
            "prompt_eval_count": self.prompt_eval_count,
            "prompt_eval_duration": eval_start - prompt_start,
            "eval_count": len(self.tokens) + 8 * len(self.tool_calls),
            "eval_duration": end - eval_start,
        }
        self.outcome = "completed"
        if not self.stream:
            return _json(done)
        return await self._write_line(done)

    async def _write_line(self, payload: dict[str, Any]) -> web.StreamResponse:
        # Headers go out with the first line, as in Ollama, so an earlier error gets a real status.
        if self.response is None:
            self.response = web.StreamResponse()
            self.response.content_type = "application/x-ndjson"
            await self.response.prepare(self.request)
        await self.response.write(_encoder.encode(payload) + b"\n")
        return self.response

    async def _fail(self, produced: int) -> web.StreamResponse:
        self.outcome = "failed"
        message = (
            f"an error was encountered while running the model: simulated failure after {produced} tokens"
        )
        if self.response is None:
            return _error(500, message)
        return await self._write_line({"error": message})  # mid-stream: the status is already 200


def _unknown_model(state: SimulatorState, name: str) -> web.Response | None:
    """Ollama's 404 for a model it does not have, or None; marks a known model as used."""
    model = canonical_model(name)
    if model not in {canonical_model(known) for known in state.config.models}:
        return _error(404, f'model "{name}" not found, try pulling it first')
    state.last_used[model] = time.time()
    return None


async def _chat(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    raw = await request.read()
    try:
        body = _chat_decoder.decode(raw)
    except msgspec.DecodeError as exc:  # also ValidationError: wrong types
        return _error(400, str(exc))
    state.chats.append(_object_decoder.decode(raw))
    if not body.model:
        return _error(400, "model is required")
    if body.messages is None:
        return _error(400, "messages is required")
    if (missing := _unknown_model(state, body.model)) is not None:
        return missing
    if not body.messages:  # Ollama answers an empty chat by loading the model
        return _json({**_chunk(body.model, "", done=True), "done_reason": "load"})
    return await _run(request, state, _Generation(request, state.config, body))


async def _generate(request: web.Request) -> web.StreamResponse:
    """``/api/generate``: the prompt (after ``system``) answered like a one-message chat."""
    state = request.app[STATE_KEY]
    try:
        body = _generate_decoder.decode(await request.read())
    except msgspec.DecodeError as exc:
        return _error(400, str(exc))
    if not body.model:
        return _error(400, "model is required")
    if (missing := _unknown_model(state, body.model)) is not None:
        return missing
    if not body.prompt:  # Ollama loads the model for an empty prompt
        return _json({**_generate_chunk(body.model, "", done=True), "done_reason": "load"})
    messages = [_Message("system", body.system)] if body.system else []
    chat = _ChatRequest(
        model=body.model,
        messages=[*messages, _Message("user", body.prompt)],
        stream=body.stream,
        options=body.options,
        format=body.format,
    )
    return await _run(request, state, _Generation(request, state.config, chat, generate=True))


async def _run(request: web.Request, state: SimulatorState, generation: _Generation) -> web.StreamResponse:
    if state.stats.in_flight >= state.config.max_queue:
        state.stats.requests_rejected += 1
        return _error(503, BUSY_ERROR)
    stats = state.stats
    stats.in_flight += 1
    stats.generations_started += 1
    # A client that leaves shows up as CancelledError (handler_cancellation=True), which we let
    # propagate, or as a reset on write; either way the outcome stays "aborted".
    try:
        return await generation.run(stats)
    except ConnectionResetError:  # includes aiohttp's ClientConnectionResetError
        if generation.response is None:
            raise
        return generation.response
    finally:
        stats.finish(generation.outcome)


async def _embed(request: web.Request) -> web.Response:
    """``/api/embed``: a deterministic unit vector per input."""
    state = request.app[STATE_KEY]
    started = time.perf_counter_ns()
    try:
        body = _embed_decoder.decode(await request.read())
    except msgspec.DecodeError as exc:
        return _error(400, str(exc))
    if not body.model:
        return _error(400, "model is required")
    if (missing := _unknown_model(state, body.model)) is not None:
        return missing
    inputs = [body.input] if isinstance(body.input, str) else list(body.input or ())
    size = state.config.embedding_dimensions
    if body.dimensions is not None:
        if not 0 < body.dimensions <= size:
            return _error(400, f"dimensions must be between 1 and {size}")
        size = body.dimensions
    model = canonical_model(body.model)
    vectors = [embedding(model, text, state.config.embedding_dimensions)[:size] for text in inputs]
    if body.dimensions is not None:  # Ollama renormalises truncated vectors
        vectors = [[x / (sum(v * v for v in vector) ** 0.5 or 1.0) for x in vector] for vector in vectors]
    return _json(
        {
            "model": body.model,
            "embeddings": vectors,
            "total_duration": time.perf_counter_ns() - started,
            "load_duration": 0,
            "prompt_eval_count": sum(len(text.split()) + 1 for text in inputs),
        }
    )


async def _embeddings(request: web.Request) -> web.Response:
    """The older ``/api/embeddings``: one prompt, one ``embedding``."""
    state = request.app[STATE_KEY]
    try:
        body = _embeddings_decoder.decode(await request.read())
    except msgspec.DecodeError as exc:
        return _error(400, str(exc))
    if (missing := _unknown_model(state, body.model)) is not None:
        return missing
    vector = embedding(canonical_model(body.model), body.prompt, state.config.embedding_dimensions)
    return _json({"embedding": vector if body.prompt else []})


async def _show(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    try:
        body = _show_decoder.decode(await request.read())
    except msgspec.DecodeError as exc:
        return _error(400, str(exc))
    name = body.model or body.name
    if (missing := _unknown_model(state, name)) is not None:
        return missing
    details = model_details(canonical_model(name))
    return _json(
        {
            "modelfile": f"FROM {canonical_model(name)}\n",
            "parameters": "",
            "template": "{{ .Prompt }}",
            "details": details["details"],
            "model_info": {"general.architecture": "llama", "general.parameter_count": 3_212_749_888},
            "capabilities": ["completion", "tools", "embedding"],
            "modified_at": _rfc3339(state.created_at),
        }
    )


async def _root(request: web.Request) -> web.Response:
    return web.Response(text="Ollama is running")


async def _version(request: web.Request) -> web.Response:
    return _json({"version": SIMULATOR_VERSION})


async def _tags(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    modified_at = _rfc3339(state.created_at)
    names = dict.fromkeys(canonical_model(name) for name in state.config.models)
    return _json({"models": [{**model_details(name), "modified_at": modified_at} for name in names]})


async def _ps(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    running = []
    for name, last_used in state.last_used.items():
        expires = last_used + KEEP_ALIVE_SECONDS
        if expires > time.time():
            entry = model_details(name)
            expires_at = _rfc3339(datetime.fromtimestamp(expires, UTC))
            running.append({**entry, "expires_at": expires_at, "size_vram": entry["size"]})
    return _json({"models": running})


async def _stats(request: web.Request) -> web.Response:
    return _json(request.app[STATE_KEY].stats)


async def _metrics(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    return web.Response(body=render(lambda: state.stats), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _reset(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    state.stats.reset()
    state.last_used.clear()
    state.chats.clear()
    return _json(state.stats)


async def _chats(request: web.Request) -> web.Response:
    return _json(list(request.app[STATE_KEY].chats))


async def _get_config(request: web.Request) -> web.Response:
    return _json(request.app[STATE_KEY].config)


async def _set_config(request: web.Request) -> web.Response:
    """Change knobs at runtime; generations already running keep the knobs they started with."""
    state = request.app[STATE_KEY]
    try:
        changes = _object_decoder.decode(await request.read())
        if unknown := changes.keys() - _CONFIG_FIELDS:
            raise ValueError(f"unknown settings: {', '.join(sorted(unknown))}")
        current = msgspec.to_builtins(state.config)
        state.config = msgspec.convert(current | changes, SimulatorConfig)  # runs __post_init__
    except (msgspec.DecodeError, ValueError) as exc:  # ValidationError is a DecodeError
        return _error(400, str(exc))
    return _json(state.config)


def create_simulator_app(config: SimulatorConfig | None = None) -> web.Application:
    """The simulator as an aiohttp app; serve it with ``handler_cancellation=True``."""
    app = web.Application()
    app[STATE_KEY] = SimulatorState(config=config or SimulatorConfig())
    app.router.add_get("/", _root)
    app.router.add_post("/api/chat", _chat)
    app.router.add_post("/api/generate", _generate)
    app.router.add_post("/api/embed", _embed)
    app.router.add_post("/api/embeddings", _embeddings)
    app.router.add_post("/api/show", _show)
    app.router.add_get("/api/tags", _tags)
    app.router.add_get("/api/ps", _ps)
    app.router.add_get("/api/version", _version)
    app.router.add_get("/sim/stats", _stats)
    app.router.add_get("/metrics", _metrics)
    app.router.add_post("/sim/reset", _reset)
    app.router.add_get("/sim/config", _get_config)
    app.router.add_get("/sim/chats", _chats)
    app.router.add_post("/sim/config", _set_config)
    return app


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the simulator until SIGINT/SIGTERM."""
    defaults = SimulatorConfig()
    parser = argparse.ArgumentParser(prog="python -m inference_worker.simulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=11435)
    parser.add_argument("--models", default=",".join(defaults.models), help="comma-separated names")
    parser.add_argument("--ttft-ms", type=float, default=defaults.ttft_ms)
    parser.add_argument("--tokens-per-second", type=float, default=defaults.tokens_per_second)
    parser.add_argument("--answer-tokens", type=int, default=defaults.answer_tokens)
    parser.add_argument("--max-queue", type=int, default=defaults.max_queue)
    parser.add_argument("--fail-after-tokens", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        config = SimulatorConfig(
            models=tuple(name.strip() for name in args.models.split(",") if name.strip()),
            ttft_ms=args.ttft_ms,
            tokens_per_second=args.tokens_per_second,
            answer_tokens=args.answer_tokens,
            max_queue=args.max_queue,
            fail_after_tokens=args.fail_after_tokens,
        )
    except ValueError as exc:
        parser.error(str(exc))
    configure_logging(service="ollama-simulator")
    run(_serve(create_simulator_app(config), args.host, args.port))


async def _serve(app: web.Application, host: str, port: int) -> None:
    # handler_cancellation: a client disconnect cancels the handler and so the generation.
    async with serving(app, host, port, handler_cancellation=True):
        await forever()


if __name__ == "__main__":
    main()
