"""``POST /chat``: the native API. Validates, then relays as SSE events or one JSON body."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from broker.messages import ChatDone
from common.http import json_response
from gateway.appkeys import MODELS, SETTINGS
from gateway.chat_requests import Chat, build
from gateway.jobs import submit_job
from gateway.relay import Answer, relay
from gateway.validation import ChatBody, check_model, check_prompt, check_session_id, read_body

_encoder = msgspec.json.Encoder()


def _sse(event: str, data: dict[str, Any], seq: int) -> bytes:
    """One event with its ``id:`` (its number in the stream: what ``Last-Event-ID`` resumes after)."""
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (seq, event.encode(), _encoder.encode(data))


def done_payload(done: ChatDone) -> dict[str, Any]:
    return {
        "session_id": done.session_id,
        "model": done.model,
        "request_id": done.request_id,
        "done_reason": done.done_reason,
        "usage": {
            "prompt_tokens": done.usage.prompt_tokens,
            "completion_tokens": done.usage.completion_tokens,
            "total_tokens": done.usage.prompt_tokens + done.usage.completion_tokens,
            "total_duration_ms": round(done.usage.total_duration_ns / 1e6, 3),
            "eval_duration_ms": round(done.usage.eval_duration_ns / 1e6, 3),
        },
    }


class NativeSse:
    """``event: token`` / ``event: done`` / ``event: error``, each with its ``id:``, and
    ``: keep-alive`` heartbeats (no id); resumable (gateway/resume.py)."""

    heartbeat = b": keep-alive\n\n"
    resumable = True

    def headers(self) -> dict[str, str]:
        return {
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache, no-store",
            "X-Accel-Buffering": "no",
        }

    def token(self, content: str, seq: int) -> bytes:
        return _sse("token", {"content": content, "seq": seq}, seq)

    def done(self, done: ChatDone, text: str, seq: int) -> bytes:
        return _sse("done", done_payload(done), seq)

    def error(self, code: str, message: str, seq: int) -> bytes:
        return _sse("error", {"error": code, "message": message}, seq)


async def chat(request: web.Request) -> web.StreamResponse:
    s = request.app[SETTINGS]
    body = await read_body(request, ChatBody)
    chat_request = build(
        request,
        Chat(
            model=check_model(
                body.model, default=s.default_model, allowed=await request.app[MODELS].current()
            ),
            session_id=check_session_id(body.session_id),
            prompt=check_prompt(body.prompt, max_chars=s.prompt_max_chars),
            stream=body.stream,
            options=body.options.generation() if body.options else None,
            job=body.run_async,
        ),
    )
    if body.run_async:
        return await submit_job(request.app, chat_request)
    result = await relay(request, chat_request, NativeSse() if body.stream else None)
    if isinstance(result, Answer):
        return json_response({**done_payload(result.done), "response": result.text})
    return result
