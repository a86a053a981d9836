"""The one place a :class:`ChatRequest` is made, whichever front the chat came through.

The native ``/chat``, OpenAI's ``/v1/chat/completions`` and ``/jobs`` each validate their own wire
shape, then describe the chat as a :class:`Chat` (what to answer, where to record it, how to
generate) and call :func:`build`. Identity and timing are decided here only: the request id (also
the job id) is the gateway's own, the caller's ``X-Request-ID`` is carried as the trace id, and the
deadline depends on whether someone is waiting on the line or polling a job.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web

from broker.messages import ChatMessage, ChatRequest, EmbedRequest, GenerationOptions
from gateway.appkeys import SETTINGS, principal_of, request_id_of, trace_id_of

__all__ = ["Chat", "build", "build_embed"]


@dataclass(frozen=True, slots=True)
class Chat:
    """A validated chat, front-independent.

    Either ``prompt`` (answered after the session's history) or ``messages`` (a whole
    conversation, sent as it is; its last user message is the turn recorded in the session).
    """

    model: str
    session_id: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    stream: bool = True
    options: GenerationOptions | None = None
    job: bool = False
    tools: list[dict[str, Any]] | None = None
    parallel_tool_calls: bool = True
    format: str | dict[str, Any] | None = None


def build(request: web.Request, chat: Chat) -> ChatRequest:
    """The broker message for ``chat``, asked by the caller of ``request``."""
    if (chat.prompt is None) == (chat.messages is None):
        raise ValueError("a chat has either a prompt or messages")
    principal = principal_of(request)
    request_id = request_id_of(request)
    settings = request.app[SETTINGS]
    now = time.time()
    conversation = chat.messages
    return ChatRequest(
        request_id=request_id,
        user_id=principal.user_id,
        org_id=principal.org_id,
        session_id=chat.session_id,
        prompt=chat.prompt if chat.prompt is not None else "",
        model=chat.model,
        stream=chat.stream and not chat.job,
        deadline=now + (settings.job_deadline if chat.job else settings.chat_deadline),
        created_at=now,
        messages=conversation,
        use_history=conversation is None,
        record=chat.session_id is not None,
        options=chat.options,
        job_id=request_id if chat.job else None,
        trace_id=trace_id_of(request),
        key_id=principal.key_id,
        api=_api_of(request.path),
        reply_mode="batch",  # this gateway's router reads ReplyBatch messages (gateway.replies)
        tools=chat.tools,
        parallel_tool_calls=chat.parallel_tool_calls,
        format=chat.format,
    )


def build_embed(
    request: web.Request,
    model: str,
    inputs: list[str],
    *,
    truncate: bool = True,
    dimensions: int | None = None,
) -> EmbedRequest:
    """The broker message embedding ``inputs`` for the caller of ``request`` (ids and deadline as
    for a chat)."""
    principal = principal_of(request)
    now = time.time()
    return EmbedRequest(
        request_id=request_id_of(request),
        user_id=principal.user_id,
        org_id=principal.org_id,
        model=model,
        input=inputs,
        truncate=truncate,
        dimensions=dimensions,
        deadline=now + request.app[SETTINGS].chat_deadline,
        created_at=now,
        trace_id=trace_id_of(request),
        reply_mode="batch",
    )


def _api_of(path: str) -> Literal["chat", "openai", "ollama"]:
    """Which API a request came through (the usage ledger reports by it)."""
    if path.startswith("/v1/"):
        return "openai"
    return "ollama" if path.startswith("/api/") else "chat"
