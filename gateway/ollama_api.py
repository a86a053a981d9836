"""Ollama's API on the gateway: ``/api/chat`` and ``/api/generate`` (NDJSON streams or one JSON
body), with tools and ``format``, through the same broker pipeline, rate limits, sessions
(optional ``session_id``) and cancellation as ``/chat``.

Authentication is the same bearer token (``ollama.Client(host=..., headers={"Authorization":
"Bearer ..."})``). Errors are Ollama's shape, ``{"error": "<for humans>"}``, plus our machine
``code`` (:func:`ollama_errors_middleware`); a model that is not served is 404, as from Ollama.
Listing, embeddings and the refused model management live in :mod:`gateway.ollama_models`.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec
from aiohttp import web

from broker.messages import ChatDone, ChatMessage, ToolCall, ToolFunction
from common.http import ApiError, json_response
from gateway.appkeys import MODELS, SETTINGS
from gateway.chat_requests import Chat, build
from gateway.error_shapes import error_shape_middleware
from gateway.relay import Answer, relay
from gateway.validation import check_messages, check_model, check_session_id, generation_options, read_body

__all__ = [
    "OllamaOptions",
    "check_ollama_model",
    "ollama_chat",
    "ollama_errors_middleware",
    "ollama_generate",
    "rfc3339",
]

_encoder = msgspec.json.Encoder()
KeepAlive = str | int | float | None


class OllamaOptions(msgspec.Struct, forbid_unknown_fields=True):
    """The ``options`` we pass on to Ollama; any other (``mirostat``, ``num_gpu`` ...) is refused by
    name: hardware and loading options are the operators'."""

    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    num_predict: int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    typical_p: float | None = None
    repeat_penalty: float | None = None
    repeat_last_n: int | None = None
    num_ctx: int | None = None


class OllamaToolFunctionIn(msgspec.Struct):
    name: str
    arguments: dict[str, Any] = msgspec.field(default_factory=dict)


class OllamaToolCallIn(msgspec.Struct):
    function: OllamaToolFunctionIn
    id: str | None = None


class OllamaMessageIn(msgspec.Struct, forbid_unknown_fields=True):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    images: list[str] | None = None
    tool_calls: list[OllamaToolCallIn] | None = None
    tool_name: str | None = None
    thinking: str | None = None  # echoed back by clients; not sent to the model


class OllamaChatBody(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /api/chat``. ``keep_alive`` is accepted and has no effect: the operators, not the
    callers, decide how long models stay loaded."""

    model: str
    messages: list[OllamaMessageIn] = msgspec.field(default_factory=list)
    stream: bool = True
    tools: list[dict[str, Any]] | None = None
    format: str | dict[str, Any] | None = None
    options: OllamaOptions | None = None
    keep_alive: KeepAlive = None
    think: bool | None = None
    session_id: str | None = None


class OllamaGenerateBody(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /api/generate``: ``prompt`` (after ``system``) answered as a one-message chat."""

    model: str
    prompt: str = ""
    system: str | None = None
    stream: bool = True
    format: str | dict[str, Any] | None = None
    options: OllamaOptions | None = None
    keep_alive: KeepAlive = None
    think: bool | None = None
    raw: bool | None = None
    suffix: str | None = None
    template: str | None = None
    context: list[int] | None = None
    images: list[str] | None = None
    session_id: str | None = None


def rfc3339(moment: float | None = None) -> str:
    when = datetime.fromtimestamp(time.time() if moment is None else moment, UTC)
    return when.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _unsupported(name: str, why: str) -> ApiError:
    return ApiError(400, "unsupported_parameter", f"parameter {name!r} is not supported: {why}")


async def check_ollama_model(request: web.Request, model: str) -> str:
    """``model`` if it is served, else Ollama's 404."""
    s = request.app[SETTINGS]
    try:
        return check_model(model, default=s.default_model, allowed=await request.app[MODELS].current())
    except ApiError as exc:
        if exc.code != "unknown_model":
            raise
        raise ApiError(404, "model_not_found", f'model "{model}" not found, try pulling it first') from None


def _options(options: OllamaOptions | None) -> Any:
    if options is None:
        return None
    return generation_options(**msgspec.structs.asdict(options))


def _format(value: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
    if value in (None, ""):
        return None
    if isinstance(value, str) and value != "json":
        raise ApiError(400, "invalid_parameter", 'format must be "json" or a JSON schema')
    return value


def _messages(messages: list[OllamaMessageIn]) -> list[ChatMessage]:
    out = []
    for message in messages:
        if message.images:
            raise ApiError(400, "unsupported_content", "images are not supported by the models here")
        calls = None
        if message.tool_calls:
            calls = [
                ToolCall(function=ToolFunction(name=c.function.name, arguments=c.function.arguments), id=c.id)
                for c in message.tool_calls
            ]
        out.append(
            ChatMessage(
                role=message.role, content=message.content, tool_calls=calls, tool_name=message.tool_name
            )
        )
    return out


def _ollama_calls(calls: list[ToolCall]) -> list[dict[str, Any]]:
    return [
        {
            "function": {"name": c.function.name, "arguments": c.function.arguments},
            **({"id": c.id} if c.id else {}),
        }
        for c in calls
    ]


def _final(done: ChatDone) -> dict[str, Any]:
    """The statistics of Ollama's last line."""
    usage = done.usage
    return {
        "done": True,
        "done_reason": done.done_reason,
        "total_duration": usage.total_duration_ns,
        "load_duration": usage.load_duration_ns,
        "prompt_eval_count": usage.prompt_tokens,
        "prompt_eval_duration": usage.prompt_eval_duration_ns,
        "eval_count": usage.completion_tokens,
        "eval_duration": usage.eval_duration_ns,
    }


class OllamaNdjson:
    """Ollama's stream: one JSON object per line, the last with ``done: true`` and the counts;
    a failure mid-stream is an ``{"error": ...}`` line.

    NDJSON has no comments, so the heartbeat (sent when the stream opens and during long gaps, so
    proxies keep it open) is a chunk with no text, which Ollama's clients take as an empty token.
    """

    resumable = False  # the resume contract is the native stream's (POST /chat)

    def __init__(self, model: str, *, generate: bool) -> None:
        self._model = model
        self._generate = generate
        self.heartbeat = self._line({**self._text(""), "done": False})

    def headers(self) -> dict[str, str]:
        return {"Content-Type": "application/x-ndjson", "Cache-Control": "no-cache, no-store"}

    def _line(self, payload: dict[str, Any]) -> bytes:
        return _encoder.encode({"model": self._model, "created_at": rfc3339(), **payload}) + b"\n"

    def _text(self, content: str) -> dict[str, Any]:
        if self._generate:
            return {"response": content}
        return {"message": {"role": "assistant", "content": content}}

    def token(self, content: str, seq: int) -> bytes:
        return self._line({**self._text(content), "done": False})

    def done(self, done: ChatDone, text: str, seq: int) -> bytes:
        out = b""
        if done.tool_calls and not self._generate:  # Ollama streams the calls in a line of their own
            message = {"role": "assistant", "content": "", "tool_calls": _ollama_calls(done.tool_calls)}
            out += self._line({"message": message, "done": False})
        return out + self._line({**self._text(""), **_final(done)})

    def error(self, code: str, message: str, seq: int) -> bytes:
        return _encoder.encode({"error": message, "code": code}) + b"\n"


def _whole(model: str, answer: Answer, *, generate: bool) -> web.Response:
    body: dict[str, Any] = {"model": model, "created_at": rfc3339()}
    if generate:
        body["response"] = answer.text
    else:
        message: dict[str, Any] = {"role": "assistant", "content": answer.text}
        if answer.done.tool_calls:
            message["tool_calls"] = _ollama_calls(answer.done.tool_calls)
        body["message"] = message
    return json_response(body | _final(answer.done))


def _loaded(model: str, *, generate: bool) -> web.Response:
    """Ollama's answer to an empty chat or prompt: the model is loaded, nothing generated."""
    text = {"response": ""} if generate else {"message": {"role": "assistant", "content": ""}}
    return json_response(
        {"model": model, "created_at": rfc3339(), **text, "done": True, "done_reason": "load"}
    )


async def _run(request: web.Request, chat: Chat, *, generate: bool) -> web.StreamResponse:
    fmt = OllamaNdjson(chat.model, generate=generate) if chat.stream else None
    result = await relay(request, build(request, chat), fmt)
    if isinstance(result, Answer):
        return _whole(chat.model, result, generate=generate)
    return result


async def ollama_chat(request: web.Request) -> web.StreamResponse:
    s = request.app[SETTINGS]
    body = await read_body(request, OllamaChatBody)
    if body.think:
        raise _unsupported("think", "the models here do not think aloud")
    model = await check_ollama_model(request, body.model)
    if not body.messages:
        return _loaded(body.model, generate=False)
    chat = Chat(
        model=model,
        session_id=check_session_id(body.session_id) if body.session_id is not None else None,
        messages=check_messages(_messages(body.messages), max_chars=s.prompt_max_chars),
        stream=body.stream,
        options=_options(body.options),
        tools=body.tools or None,
        format=_format(body.format),
    )
    return await _run(request, chat, generate=False)


async def ollama_generate(request: web.Request) -> web.StreamResponse:
    s = request.app[SETTINGS]
    body = await read_body(request, OllamaGenerateBody)
    for name, value in (
        ("think", body.think),
        ("raw", body.raw),
        ("suffix", body.suffix),
        ("template", body.template),
        ("context", body.context),
        ("images", body.images),
    ):
        if value:
            raise _unsupported(name, "the models here are only reached through chat")
    model = await check_ollama_model(request, body.model)
    if not body.prompt:
        return _loaded(body.model, generate=True)
    system = [ChatMessage(role="system", content=body.system)] if body.system else []
    chat = Chat(
        model=model,
        session_id=check_session_id(body.session_id) if body.session_id is not None else None,
        messages=check_messages(
            [*system, ChatMessage(role="user", content=body.prompt)], max_chars=s.prompt_max_chars
        ),
        stream=body.stream,
        options=_options(body.options),
        format=_format(body.format),
    )
    return await _run(request, chat, generate=True)


def _ollama_error(code: str, message: str, status: int) -> tuple[dict[str, Any], int]:
    """Ollama's ``{"error": <message>}`` (plus ``code``, the machine code); a model the worker did
    not find is 404, as from Ollama."""
    return {"error": message or code, "code": code}, 404 if code == "model_not_found" else status


ollama_errors_middleware = error_shape_middleware("/api/", _ollama_error)
