"""OpenAI-compatible API: ``POST /v1/chat/completions`` (streaming and not) and ``GET /v1/models``.

Same authentication (the bearer token is the API key) and rate limits as ``/chat``. The
conversation is the request's ``messages``; an optional ``session_id`` (``extra_body`` in the
``openai`` client) records the last user message and the answer in that session. Errors use
OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import msgspec
from aiohttp import web
from aiohttp.typedefs import Handler

from broker.messages import ChatDone, GenerationOptions
from common.http import ApiError, json_response, read_json
from gateway.appkeys import MODELS, SETTINGS
from gateway.chat_requests import Chat, build
from gateway.relay import Answer, relay
from gateway.validation import check_conversation, check_model, check_session_id

_encoder = msgspec.json.Encoder()


class TextPart(msgspec.Struct):
    type: str
    text: str = ""


class OpenAIMessage(msgspec.Struct):
    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[TextPart] | None = None
    name: str | None = None


class StreamOptions(msgspec.Struct):
    include_usage: bool = False


class CompletionBody(msgspec.Struct):
    """The subset of OpenAI's chat completion request we serve; unknown fields are ignored."""

    model: str
    messages: list[OpenAIMessage]
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = 1
    session_id: str | None = None


def _text(message: OpenAIMessage) -> str:
    if message.content is None:
        return ""
    if isinstance(message.content, str):
        return message.content
    if any(part.type != "text" for part in message.content):
        raise ApiError(400, "unsupported_content", "only text content parts are supported")
    return "".join(part.text for part in message.content)


def _options(body: CompletionBody) -> GenerationOptions | None:
    """OpenAI's sampling parameters under their Ollama names."""
    limit = body.max_completion_tokens or body.max_tokens
    if limit is not None and limit < 1:
        raise ApiError(400, "invalid_request", "max_tokens must be at least 1")
    options = GenerationOptions(
        temperature=body.temperature, top_p=body.top_p, num_predict=limit, seed=body.seed, stop=body.stop
    )
    return options if options.to_ollama() else None


def _usage(done: ChatDone) -> dict[str, int]:
    prompt, completion = done.usage.prompt_tokens, done.usage.completion_tokens
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _finish_reason(done: ChatDone) -> str:
    return "length" if done.done_reason == "length" else "stop"


class OpenAISse:
    """``data: {chat.completion.chunk}`` lines, then ``data: [DONE]``."""

    heartbeat = b": keep-alive\n\n"
    resumable = False  # the resume contract is the native stream's (POST /chat)

    def __init__(self, completion_id: str, model: str, created: int, include_usage: bool) -> None:
        self._id = completion_id
        self._model = model
        self._created = created
        self._include_usage = include_usage

    def headers(self) -> dict[str, str]:
        return {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache, no-store"}

    def _chunk(self, delta: dict[str, str], finish: str | None, **extra: Any) -> bytes:
        payload = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra,
        }
        return b"data: " + _encoder.encode(payload) + b"\n\n"

    def token(self, content: str, seq: int) -> bytes:
        delta = {"role": "assistant", "content": content} if seq == 0 else {"content": content}
        return self._chunk(delta, None)

    def done(self, done: ChatDone, text: str, seq: int) -> bytes:
        last = self._chunk({}, _finish_reason(done))
        if self._include_usage:
            usage = {
                "id": self._id,
                "object": "chat.completion.chunk",
                "created": self._created,
                "model": self._model,
                "choices": [],
                "usage": _usage(done),
            }
            last += b"data: " + _encoder.encode(usage) + b"\n\n"
        return last + b"data: [DONE]\n\n"

    def error(self, code: str, message: str, seq: int) -> bytes:
        return b"data: " + _encoder.encode(openai_error_body(code, message, 502)) + b"\n\n"


async def chat_completions(request: web.Request) -> web.StreamResponse:
    s = request.app[SETTINGS]
    body = await read_json(request, CompletionBody)
    if body.n != 1:
        raise ApiError(400, "unsupported_parameter", "only n=1 is supported")
    conversation = check_conversation(
        [(m.role, _text(m)) for m in body.messages], max_chars=s.prompt_max_chars
    )
    model = check_model(body.model, default=s.default_model, allowed=await request.app[MODELS].current())
    session_id = check_session_id(body.session_id) if body.session_id is not None else None
    chat_request = build(
        request,
        Chat(
            model=model,
            session_id=session_id,
            messages=conversation,
            stream=body.stream,
            options=_options(body),
        ),
    )
    request_id = chat_request.request_id
    now = chat_request.created_at
    completion_id = f"chatcmpl-{request_id}"
    created = int(now)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    fmt = OpenAISse(completion_id, model, created, include_usage) if body.stream else None
    result = await relay(request, chat_request, fmt)
    if not isinstance(result, Answer):
        return result
    return json_response(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": result.text},
                    "finish_reason": _finish_reason(result.done),
                }
            ],
            "usage": _usage(result.done),
        }
    )


async def list_models(request: web.Request) -> web.Response:
    models = await request.app[MODELS].listed()
    return json_response(
        {
            "object": "list",
            "data": [{"id": m, "object": "model", "created": 0, "owned_by": "organization"} for m in models],
        }
    )


_ERROR_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}


def openai_error_body(code: str, message: str, status: int) -> dict[str, Any]:
    kind = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


@web.middleware
async def openai_errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Rewrite our ``{"error", "message"}`` bodies into OpenAI's shape under ``/v1/``."""
    response = await handler(request)
    if (
        not request.path.startswith("/v1/")
        or response.status < 400
        or response.prepared
        or not isinstance(response, web.Response)
        or response.content_type != "application/json"
        or response.body is None
    ):
        return response
    try:
        original = json.loads(bytes(response.body))  # type: ignore[arg-type]
    except ValueError:
        return response
    if not isinstance(original, dict) or not isinstance(original.get("error"), str):
        return response
    body = openai_error_body(original["error"], str(original.get("message", "")), response.status)
    return json_response(
        body,
        status=response.status,
        headers={
            k: v for k, v in response.headers.items() if k.lower() not in {"content-type", "content-length"}
        },
    )
