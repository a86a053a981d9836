"""Response bodies of the HTTP API as msgspec Structs: the schemas of ``gateway/openapi.json``.

Handlers build these bodies as dicts; the Structs here only describe them (``gateway.contract``
turns them into JSON Schema). The property-based API test validates every response the services
give against these schemas, so a handler that drifts from its documented shape fails a test.
Fields that clients rely on (DESIGN.md, "HTTP API") are required; bodies may carry more fields.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

__all__ = [
    "ChatAnswer",
    "ChatCompletion",
    "ChatUsage",
    "ChunkChoice",
    "ChunkDelta",
    "CompletionChoice",
    "CompletionChunk",
    "CompletionMessage",
    "CompletionUsage",
    "DoneEvent",
    "Error",
    "Health",
    "JobAccepted",
    "JobView",
    "Jwk",
    "Jwks",
    "Model",
    "ModelList",
    "OpenAIError",
    "OpenAIErrorDetail",
    "Ready",
    "RegisteredUser",
    "SessionDetail",
    "SessionEnded",
    "SessionPage",
    "SessionSummary",
    "TokenEvent",
    "TokenPair",
    "TurnView",
    "UserPage",
    "UserView",
]

JobStatus = Literal["queued", "running", "done", "failed", "cancelled"]
SessionState = Literal["active", "ended", "archived"]
# Machine-readable error codes are snake_case.
ErrorCode = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]*$")]


class Error(msgspec.Struct):
    """Every error: a machine code and a sentence for humans."""

    error: ErrorCode
    message: str


class OpenAIErrorDetail(msgspec.Struct):
    message: str
    type: str
    param: str | None
    code: ErrorCode | None


class OpenAIError(msgspec.Struct):
    """Errors under ``/v1/``, in OpenAI's shape."""

    error: OpenAIErrorDetail


# -- auth ------------------------------------------------------------------------------------------
class RegisteredUser(msgspec.Struct):
    user_id: str
    username: str
    organization: str
    email: str
    role: str
    created_at: float


class UserView(msgspec.Struct):
    """A user as the API shows it (never the password hash)."""

    user_id: str
    username: str
    email: str
    organization: str
    role: str
    disabled: bool
    created_at: float


class UserPage(msgspec.Struct):
    users: list[UserView]
    next: str | None


class TokenPair(msgspec.Struct):
    access_token: str
    token_type: Literal["bearer"]
    expires_in: int
    refresh_token: str
    refresh_expires_in: int


class Jwk(msgspec.Struct):
    kty: str
    kid: str
    alg: str
    use: str
    crv: str | None = None
    x: str | None = None


class Jwks(msgspec.Struct):
    keys: list[Jwk]


# -- chat ------------------------------------------------------------------------------------------
class ChatUsage(msgspec.Struct):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    total_duration_ms: float
    eval_duration_ms: float


class ChatAnswer(msgspec.Struct):
    """``POST /chat`` with ``"stream": false``: the whole answer at once."""

    session_id: str | None
    model: str
    response: str
    usage: ChatUsage
    request_id: str
    done_reason: str


class TokenEvent(msgspec.Struct):
    """``event: token``: a run of generated text; ``seq`` counts from 0."""

    content: str
    seq: int


class DoneEvent(msgspec.Struct):
    """``event: done``: the answer is complete."""

    session_id: str | None
    model: str
    usage: ChatUsage
    request_id: str
    done_reason: str


class CompletionMessage(msgspec.Struct):
    role: Literal["assistant"]
    content: str


class CompletionChoice(msgspec.Struct):
    index: int
    message: CompletionMessage
    finish_reason: Literal["stop", "length"]


class CompletionUsage(msgspec.Struct):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(msgspec.Struct):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: CompletionUsage


class ChunkDelta(msgspec.Struct):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(msgspec.Struct):
    index: int
    delta: ChunkDelta
    finish_reason: Literal["stop", "length"] | None


class CompletionChunk(msgspec.Struct):
    """One ``data:`` line of a streamed completion."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: CompletionUsage | None = None


class Model(msgspec.Struct):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(msgspec.Struct):
    object: Literal["list"]
    data: list[Model]


# -- jobs ------------------------------------------------------------------------------------------
class JobAccepted(msgspec.Struct):
    job_id: str
    status: JobStatus
    status_url: str


class JobView(msgspec.Struct):
    """A job; ``response`` and ``usage`` once done, ``error`` and ``message`` once failed."""

    job_id: str
    status: JobStatus
    model: str
    session_id: str | None
    created_at: float
    updated_at: float
    response: str | None = None
    usage: dict[str, int] | None = None
    error: str | None = None
    message: str | None = None


# -- sessions --------------------------------------------------------------------------------------
class SessionSummary(msgspec.Struct):
    session_id: str
    state: SessionState
    turns: int
    created_at: float
    last_activity: float
    title: str | None = None
    archived_at: float | None = None


class SessionPage(msgspec.Struct):
    sessions: list[SessionSummary]
    next: str | None


class TurnView(msgspec.Struct):
    role: str
    content: str
    created_at: float
    model: str | None = None
    usage: dict[str, int] | None = None
    # Assistant turns: how the exchange ended. ``interrupted``: the text the client got, then an
    # error; ``cancelled``: the client left; ``failed``: the generation failed after some text.
    outcome: Literal["done", "interrupted", "cancelled", "failed"] | None = None


class SessionDetail(msgspec.Struct):
    session_id: str
    state: SessionState
    turns: list[TurnView]
    created_at: float
    last_activity: float
    title: str | None = None
    archived_at: float | None = None


class SessionEnded(msgspec.Struct):
    session_id: str
    state: Literal["ended", "archived"]


# -- operations ------------------------------------------------------------------------------------
class Health(msgspec.Struct):
    status: Literal["ok"]


class Ready(msgspec.Struct):
    status: Literal["ready"]
