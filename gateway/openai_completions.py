"""OpenAI's legacy ``POST /v1/completions``: the prompt answered as a one-message chat (Ollama's
generate), streamed as ``text_completion`` chunks or in one body."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from broker.messages import ChatDone, ChatMessage
from common.http import ApiError, json_response
from gateway.appkeys import MODELS, SETTINGS
from gateway.chat_requests import Chat, build
from gateway.openai import finish_reason, openai_error_body, usage_of
from gateway.openai_requests import LegacyCompletionBody, refuse_unsupported
from gateway.relay import Answer, relay
from gateway.validation import check_messages, check_model, check_session_id, generation_options, read_body

__all__ = ["completions"]

_encoder = msgspec.json.Encoder()


class TextSse:
    """``data: {text_completion}`` lines, then ``data: [DONE]``."""

    heartbeat = b": keep-alive\n\n"
    resumable = False  # the resume contract is the native stream's (POST /chat)

    def __init__(self, completion_id: str, model: str, created: int, include_usage: bool) -> None:
        self._head = {"id": completion_id, "object": "text_completion", "created": created, "model": model}
        self._include_usage = include_usage

    def headers(self) -> dict[str, str]:
        return {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache, no-store"}

    def _line(self, text: str, finish: str | None, **extra: Any) -> bytes:
        choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": finish}
        return b"data: " + _encoder.encode({**self._head, "choices": [choice], **extra}) + b"\n\n"

    def token(self, content: str, seq: int) -> bytes:
        return self._line(content, None)

    def done(self, done: ChatDone, text: str, seq: int) -> bytes:
        extra = {"usage": usage_of(done)} if self._include_usage else {}
        return self._line("", finish_reason(done), **extra) + b"data: [DONE]\n\n"

    def error(self, code: str, message: str, seq: int) -> bytes:
        return b"data: " + _encoder.encode(openai_error_body(code, message, 502)) + b"\n\n"


async def completions(request: web.Request) -> web.StreamResponse:
    s = request.app[SETTINGS]
    body = await read_body(request, LegacyCompletionBody)
    refuse_unsupported(body)
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if len(prompts) != 1:
        raise ApiError(
            400, "unsupported_parameter", "parameter 'prompt' is not supported as a batch: send one"
        )
    model = check_model(body.model, default=s.default_model, allowed=await request.app[MODELS].current())
    chat_request = build(
        request,
        Chat(
            model=model,
            session_id=check_session_id(body.session_id) if body.session_id is not None else None,
            messages=check_messages(
                [ChatMessage(role="user", content=prompts[0])], max_chars=s.prompt_max_chars
            ),
            stream=body.stream,
            options=generation_options(
                temperature=body.temperature,
                top_p=body.top_p,
                num_predict=body.max_tokens,
                seed=body.seed,
                stop=body.stop,
                frequency_penalty=body.frequency_penalty,
                presence_penalty=body.presence_penalty,
            ),
        ),
    )
    completion_id = f"cmpl-{chat_request.request_id}"
    created = int(chat_request.created_at)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    fmt = TextSse(completion_id, model, created, include_usage) if body.stream else None
    result = await relay(request, chat_request, fmt)
    if not isinstance(result, Answer):
        return result
    choice = {"text": result.text, "index": 0, "logprobs": None, "finish_reason": finish_reason(result.done)}
    return json_response(
        {
            "id": completion_id,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [choice],
            "usage": usage_of(result.done),
        }
    )
