"""OpenAI-compatible API: ``POST /v1/chat/completions`` (streaming and not, tools, structured
output), ``GET /v1/models`` and ``GET /v1/models/{model_id}``.

Same authentication (the bearer token is the API key) and rate limits as ``/chat``. The
conversation is the request's ``messages``; an optional ``session_id`` (``extra_body`` in the
``openai`` client) records the last user message and the answer in that session. Errors use
OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``. Which parameter becomes what
is :mod:`gateway.openai_requests`.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
import structlog
from aiohttp import web

from broker.messages import ChatDone, ToolCall
from common.http import ApiError, json_response
from gateway.appkeys import MODELS, SETTINGS
from gateway.chat_requests import Chat, build
from gateway.error_shapes import error_shape_middleware
from gateway.openai_requests import (
    CompletionBody,
    conversation,
    refuse_unsupported,
    structured_output,
    tool_setup,
)
from gateway.relay import Answer, relay
from gateway.validation import check_messages, check_model, check_session_id, generation_options, read_body

log = structlog.get_logger(__name__)


_encoder = msgspec.json.Encoder()


def usage_of(done: ChatDone) -> dict[str, int]:
    prompt, completion = done.usage.prompt_tokens, done.usage.completion_tokens
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def finish_reason(done: ChatDone) -> str:
    if done.tool_calls:
        return "tool_calls"
    return "length" if done.done_reason == "length" else "stop"


def openai_tool_calls(calls: list[ToolCall], *, indexed: bool = False) -> list[dict[str, Any]]:
    """Tool calls in OpenAI's shape (arguments as a JSON string); ``indexed`` for stream deltas."""
    out = []
    for i, call in enumerate(calls):
        entry: dict[str, Any] = {
            "id": call.id or f"call_{i}",
            "type": "function",
            "function": {"name": call.function.name, "arguments": json.dumps(call.function.arguments)},
        }
        out.append({"index": i, **entry} if indexed else entry)
    return out


class OpenAISse:
    """``data: {chat.completion.chunk}`` lines, then ``data: [DONE]``; tool calls as deltas
    before the last chunk (``finish_reason: "tool_calls"``)."""

    heartbeat = b": keep-alive\n\n"
    resumable = False  # the resume contract is the native stream's (POST /chat)

    def __init__(self, completion_id: str, model: str, created: int, include_usage: bool) -> None:
        self._id = completion_id
        self._model = model
        self._created = created
        self._include_usage = include_usage
        self._started = False

    def headers(self) -> dict[str, str]:
        return {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache, no-store"}

    def _chunk(self, delta: dict[str, Any], finish: str | None, **extra: Any) -> bytes:
        payload = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra,
        }
        return b"data: " + _encoder.encode(payload) + b"\n\n"

    def _delta(self, **fields: Any) -> dict[str, Any]:
        if self._started:
            return fields
        self._started = True
        return {"role": "assistant", **fields}

    def token(self, content: str, seq: int) -> bytes:
        return self._chunk(self._delta(content=content), None)

    def done(self, done: ChatDone, text: str, seq: int) -> bytes:
        out = b""
        if done.tool_calls:
            out += self._chunk(self._delta(tool_calls=openai_tool_calls(done.tool_calls, indexed=True)), None)
        out += self._chunk({}, finish_reason(done))
        if self._include_usage:
            usage = {
                "id": self._id,
                "object": "chat.completion.chunk",
                "created": self._created,
                "model": self._model,
                "choices": [],
                "usage": usage_of(done),
            }
            out += b"data: " + _encoder.encode(usage) + b"\n\n"
        return out + b"data: [DONE]\n\n"

    def error(self, code: str, message: str, seq: int) -> bytes:
        return b"data: " + _encoder.encode(openai_error_body(code, message, 502)) + b"\n\n"


async def chat_completions(request: web.Request) -> web.StreamResponse:
    s = request.app[SETTINGS]
    body = await read_body(request, CompletionBody)
    refuse_unsupported(body)
    messages = check_messages(conversation(body.messages), max_chars=s.prompt_max_chars)
    model = check_model(body.model, default=s.default_model, allowed=await request.app[MODELS].current())
    session_id = check_session_id(body.session_id) if body.session_id is not None else None
    tools, parallel = tool_setup(body)
    if body.user or body.safety_identifier:
        log.info("openai_end_user", end_user=body.user or body.safety_identifier)
    limit = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    chat_request = build(
        request,
        Chat(
            model=model,
            session_id=session_id,
            messages=messages,
            stream=body.stream,
            options=generation_options(
                temperature=body.temperature,
                top_p=body.top_p,
                num_predict=limit,
                seed=body.seed,
                stop=body.stop,
                frequency_penalty=body.frequency_penalty,
                presence_penalty=body.presence_penalty,
            ),
            tools=tools,
            parallel_tool_calls=parallel,
            format=structured_output(body.response_format),
        ),
    )
    completion_id = f"chatcmpl-{chat_request.request_id}"
    created = int(chat_request.created_at)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    fmt = OpenAISse(completion_id, model, created, include_usage) if body.stream else None
    result = await relay(request, chat_request, fmt)
    if not isinstance(result, Answer):
        return result
    message: dict[str, Any] = {"role": "assistant", "content": result.text}
    if result.done.tool_calls:
        message["tool_calls"] = openai_tool_calls(result.done.tool_calls)
        message["content"] = result.text or None
    return json_response(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason(result.done)}],
            "usage": usage_of(result.done),
        }
    )


def distinct_models(models: tuple[str, ...]) -> list[str]:
    """One name per model: ``llama3.2:latest`` is listed as ``llama3.2``."""
    return list(dict.fromkeys(m.removesuffix(":latest") for m in models))


def _model_entry(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "organization"}


async def list_models(request: web.Request) -> web.Response:
    models = distinct_models(await request.app[MODELS].listed())
    return json_response({"object": "list", "data": [_model_entry(m) for m in models]})


async def get_model(request: web.Request) -> web.Response:
    """``GET /v1/models/{model_id}`` (``models.retrieve``); ``x:latest`` is ``x``."""
    wanted = request.match_info["model_id"]
    models = distinct_models(await request.app[MODELS].listed())
    name = wanted.removesuffix(":latest")
    if name not in models:
        raise ApiError(404, "model_not_found", f"the model {wanted!r} does not exist")
    return json_response(_model_entry(name))


_ERROR_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}


def openai_error_body(code: str, message: str, status: int) -> dict[str, Any]:
    kind = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _openai_error(code: str, message: str, status: int) -> tuple[dict[str, Any], int]:
    return openai_error_body(code, message, status), status


openai_errors_middleware = error_shape_middleware("/v1/", _openai_error)
"""Our error bodies in OpenAI's shape under ``/v1/``."""
