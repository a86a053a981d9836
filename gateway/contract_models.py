"""Response bodies of the HTTP API as msgspec Structs: the schemas of ``gateway/openapi.json``.

Handlers build these bodies as dicts; the Structs here only describe them (``gateway.contract``
turns them into JSON Schema). The property-based API test validates every response the services
give against these schemas, so a handler that drifts from its documented shape fails a test.
Fields that clients rely on (DESIGN.md, "HTTP API") are required; bodies may carry more fields.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

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
    "EmbeddingList",
    "Error",
    "Health",
    "JobAccepted",
    "JobView",
    "Jwk",
    "Jwks",
    "Model",
    "ModelList",
    "OllamaChatResponse",
    "OllamaEmbed",
    "OllamaEmbedding",
    "OllamaError",
    "OllamaGenerateResponse",
    "OllamaModelList",
    "OllamaShow",
    "OllamaVersion",
    "OpenAIError",
    "OpenAIErrorDetail",
    "Ready",
    "RegisteredUser",
    "SessionDetail",
    "SessionEnded",
    "SessionPage",
    "SessionSummary",
    "TextCompletion",
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


class OllamaError(msgspec.Struct):
    """Errors under ``/api/``, in Ollama's shape (``error`` is for humans), with our machine code."""

    error: str
    code: ErrorCode


# -- auth ------------------------------------------------------------------------------------------
class RegisteredUser(msgspec.Struct):
    user_id: str
    username: str
    organization: str
    email: str
    role: str
    created_at: float
    organization_id: str
    # How the account joined: "invitation", "domain" (an allowed email domain) or "personal".
    joined_by: str


class UserView(msgspec.Struct):
    """A user as the API shows it (never the password hash)."""

    user_id: str
    username: str
    email: str
    organization: str
    role: str
    disabled: bool
    created_at: float
    organization_id: str
    kind: str  # "person" or "service" (a service account: API keys only)


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


class FunctionCall(msgspec.Struct):
    name: str
    arguments: str  # a JSON object, as a string


class ToolCallOut(msgspec.Struct):
    id: str
    type: Literal["function"]
    function: FunctionCall


class ToolCallDelta(msgspec.Struct):
    index: int
    id: str
    type: Literal["function"]
    function: FunctionCall


FinishReason = Literal["stop", "length", "tool_calls"]


class CompletionMessage(msgspec.Struct):
    role: Literal["assistant"]
    content: str | None
    tool_calls: list[ToolCallOut] | None = None


class CompletionChoice(msgspec.Struct):
    index: int
    message: CompletionMessage
    finish_reason: FinishReason


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
    tool_calls: list[ToolCallDelta] | None = None


class ChunkChoice(msgspec.Struct):
    index: int
    delta: ChunkDelta
    finish_reason: FinishReason | None


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


class Embedding(msgspec.Struct):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str  # a string with encoding_format "base64" (float32, little-endian)


class EmbeddingUsage(msgspec.Struct):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(msgspec.Struct):
    """``POST /v1/embeddings``: one vector per input, in order."""

    object: Literal["list"]
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


class TextChoice(msgspec.Struct):
    text: str
    index: int
    logprobs: None
    finish_reason: FinishReason | None


class TextCompletion(msgspec.Struct):
    """``POST /v1/completions`` (legacy), or one ``data:`` line of its stream."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[TextChoice]
    usage: CompletionUsage | None = None


# -- Ollama ----------------------------------------------------------------------------------------
class OllamaFunctionCall(msgspec.Struct):
    name: str
    arguments: dict[str, Any]


class OllamaToolCall(msgspec.Struct):
    function: OllamaFunctionCall
    id: str | None = None


class OllamaMessage(msgspec.Struct):
    role: Literal["assistant"]
    content: str
    tool_calls: list[OllamaToolCall] | None = None


class OllamaChatResponse(msgspec.Struct):
    """``POST /api/chat`` with ``stream: false``, or one line of its NDJSON stream (the last has
    ``done: true`` and the counts, durations in nanoseconds)."""

    model: str
    created_at: str
    message: OllamaMessage
    done: bool
    done_reason: str | None = None
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None
    prompt_eval_duration: int | None = None
    eval_count: int | None = None
    eval_duration: int | None = None


class OllamaGenerateResponse(msgspec.Struct):
    """``POST /api/generate`` with ``stream: false``, or one line of its NDJSON stream."""

    model: str
    created_at: str
    response: str
    done: bool
    done_reason: str | None = None
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None
    prompt_eval_duration: int | None = None
    eval_count: int | None = None
    eval_duration: int | None = None


class OllamaModelDetails(msgspec.Struct):
    parent_model: str
    format: str
    family: str
    families: list[str]
    parameter_size: str
    quantization_level: str


class OllamaModel(msgspec.Struct):
    name: str
    model: str
    size: int
    digest: str
    details: OllamaModelDetails
    modified_at: str | None = None
    expires_at: str | None = None
    size_vram: int | None = None


class OllamaModelList(msgspec.Struct):
    models: list[OllamaModel]


class OllamaShow(msgspec.Struct):
    modelfile: str
    parameters: str
    template: str
    details: OllamaModelDetails
    model_info: dict[str, Any]
    capabilities: list[str]
    modified_at: str


class OllamaVersion(msgspec.Struct):
    version: str


class OllamaEmbed(msgspec.Struct):
    model: str
    embeddings: list[list[float]]
    total_duration: int
    load_duration: int
    prompt_eval_count: int


class OllamaEmbedding(msgspec.Struct):
    embedding: list[float]


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
    # An assistant turn that called tools instead of answering (content then empty), as Ollama's
    # message.tool_calls; ``id`` is the one the OpenAI API gave the call.
    tool_calls: list[OllamaToolCall] | None = None
    # A "tool" turn (a tool's result the client sent): the function it answers.
    tool_name: str | None = None


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
