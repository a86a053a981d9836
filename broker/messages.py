"""Typed messages on the broker, shared by producers and consumers.

Every message is JSON with ``schema_version``, ``request_id``, ``user_id`` and ``org_id``.
``request_id`` is the routing identity (AMQP ``correlation_id``, job id, cancel target): the
gateway generates it (128 random bits) and never takes it from a client. A client's
``X-Request-ID`` travels as ``trace_id`` only: logged and propagated, never used to route or own.
Readers ignore unknown fields, so adding a field is a compatible change; removing or retyping
one bumps ``SCHEMA_VERSION``. Replies are a tagged union on the ``type`` field.

Replies reach a reply queue in one of two forms, chosen by the requester (``ChatRequest.reply_mode``):
``"message"`` (the default, for integrators publishing straight to the queue): one broker message per
reply, ``correlation_id`` = request id; ``"batch"`` (what the gateway asks for): a worker gathers the
replies bound for one reply queue from all its running generations into a :class:`ReplyBatch` per
flush tick, so reply-path messages scale with workers x gateways, not with streams. A batch is the
one message without a ``request_id`` of its own: each frame in it is a whole reply, with its own
``request_id`` and ``user_id``, and readers check those per frame.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

SCHEMA_VERSION = 1

# AMQP message ``type`` property and reply ``type`` tags.
CHAT_REQUEST = "chat.request"
EMBED_REQUEST = "embed.request"
TOKEN = "token"
DONE = "done"
ERROR = "error"
CANCEL = "cancel"
RESUME = "resume"
ALIVE = "alive"
BATCH = "batch"

# How a requester wants its replies (``ChatRequest.reply_mode``): one message each, or in batches.
ReplyMode = Literal["message", "batch"]

# Headers carried on every message so a request can be followed across hops.
HEADER_REQUEST_ID = "x-request-id"  # the server-generated request id (routing identity)
HEADER_TRACE_ID = "x-trace-id"  # the caller's trace id (X-Request-ID), for logs only
HEADER_TRACEPARENT = "traceparent"


class ToolFunction(msgspec.Struct, kw_only=True):
    """The function a tool call invokes; ``arguments`` is an object, as in Ollama's API."""

    name: str
    arguments: dict[str, Any] = msgspec.field(default_factory=dict)


class ToolCall(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One tool call the model made (Ollama's ``message.tool_calls[]``); ``id`` as OpenAI names it."""

    function: ToolFunction
    id: str | None = None


class ChatMessage(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One message of a conversation supplied by the caller (OpenAI-style ``messages``).

    An assistant message may carry the ``tool_calls`` it made; a ``tool`` message is the result of
    one, ``tool_name`` naming the function (Ollama's field)."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str
    tool_calls: list[ToolCall] | None = None
    tool_name: str | None = None


class GenerationOptions(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Sampling options, named and meant as Ollama's ``options`` (the worker passes them on)."""

    temperature: float | None = None
    top_p: float | None = None
    num_predict: int | None = None  # the most tokens to generate
    seed: int | None = None
    stop: str | list[str] | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    typical_p: float | None = None
    repeat_penalty: float | None = None
    repeat_last_n: int | None = None
    num_ctx: int | None = None

    def to_ollama(self) -> dict[str, object]:
        """Ollama's ``options`` object: only what was set."""
        return {k: v for k, v in msgspec.structs.asdict(self).items() if v is not None}


class ChatRequest(msgspec.Struct, kw_only=True, tag=CHAT_REQUEST, tag_field="type"):
    """A chat generation request, published to the request queue.

    When ``messages`` is given the worker sends exactly that conversation (plus the session history
    if ``session_id`` is set and ``use_history`` is true); otherwise it sends the session history
    followed by ``prompt``. ``deadline`` is a Unix timestamp after which nobody waits for the answer.
    """

    schema_version: int = SCHEMA_VERSION
    request_id: str
    user_id: str
    org_id: str
    session_id: str | None
    prompt: str
    model: str
    stream: bool = True
    deadline: float
    created_at: float
    messages: list[ChatMessage] | None = None
    use_history: bool = True
    record: bool = True
    options: GenerationOptions | None = None
    job_id: str | None = None
    trace_id: str = ""
    # The API key the request came with (usage is recorded per key), and the API it came through.
    key_id: str = ""
    api: Literal["chat", "openai", "job", "ollama"] = "chat"
    reply_mode: Annotated[
        ReplyMode,
        msgspec.Meta(
            description="'message' (default): one reply per broker message, correlation_id = request_id; "
            "'batch': replies arrive in ReplyBatch messages shared with other requests to the same "
            "reply queue (check each frame's request_id and user_id)"
        ),
    ] = "message"
    tools: Annotated[
        list[dict[str, Any]] | None,
        msgspec.Meta(
            description="Tools the model may call, as Ollama's /api/chat takes them "
            '([{"type": "function", "function": {"name", "description", "parameters"}}]); '
            "its calls come back in ChatDone.tool_calls"
        ),
    ] = None
    parallel_tool_calls: Annotated[
        bool, msgspec.Meta(description="false: at most one tool call is returned")
    ] = True
    format: Annotated[
        str | dict[str, Any] | None,
        msgspec.Meta(
            description='Ollama\'s structured output: "json" (any JSON value) or a JSON schema the '
            "answer must conform to"
        ),
    ] = None

    @property
    def user_turn(self) -> str:
        """The user's turn this request answers: its last user message, else ``prompt``."""
        for message in reversed(self.messages or ()):
            if message.role == "user":
                return message.content
        return self.prompt


class EmbedRequest(msgspec.Struct, kw_only=True, tag=EMBED_REQUEST, tag_field="type"):
    """Embed ``input`` (a batch of texts) with ``model``, published to the request queue like a chat.

    Answered by one ``done`` whose ``embeddings`` holds a vector per input (``usage.prompt_tokens``
    counts the input tokens), or an ``error``; no ``token`` replies. ``dimensions`` truncates the
    vectors where the model supports it; ``truncate`` false refuses inputs longer than the context.
    """

    schema_version: int = SCHEMA_VERSION
    request_id: str
    user_id: str
    org_id: str
    model: str
    input: list[str]
    truncate: bool = True
    dimensions: int | None = None
    deadline: float
    created_at: float
    trace_id: str = ""
    reply_mode: ReplyMode = "message"
    session_id: None = None  # replies name no session (the field keeps one shape for every request)
    job_id: None = None


class Usage(msgspec.Struct, kw_only=True):
    """Token counts and Ollama's durations (nanoseconds) for one generation."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_duration_ns: int = 0
    load_duration_ns: int = 0
    prompt_eval_duration_ns: int = 0
    eval_duration_ns: int = 0


# The ``generation`` field of every reply: which attempt at the request it belongs to.
AttemptId = Annotated[
    str,
    msgspec.Meta(
        description="Id of one attempt at the request: a worker that takes the request up (again, "
        "after a redelivery) answers under a new one, so a new value means the answer restarted"
    ),
]


class TokenChunk(msgspec.Struct, kw_only=True, tag=TOKEN, tag_field="type"):
    """A coalesced run of generated text. ``seq`` starts at 0 for each attempt (``generation``)."""

    schema_version: int = SCHEMA_VERSION
    request_id: str
    user_id: str
    org_id: str
    generation: AttemptId
    seq: int
    content: str


class ChatDone(msgspec.Struct, kw_only=True, tag=DONE, tag_field="type"):
    """The generation finished; ``chunks`` lets the reader check it saw every chunk."""

    schema_version: int = SCHEMA_VERSION
    request_id: str
    user_id: str
    org_id: str
    generation: AttemptId
    session_id: str | None
    model: str
    chunks: int
    done_reason: str
    usage: Usage
    node: str | None = None
    tool_calls: Annotated[
        list[ToolCall] | None,
        msgspec.Meta(description="The tool calls the model made instead of (or beside) text"),
    ] = None
    embeddings: Annotated[
        list[list[float]] | None,
        msgspec.Meta(description="The answer to an EmbedRequest: one vector per input, in order"),
    ] = None


class ChatError(msgspec.Struct, kw_only=True, tag=ERROR, tag_field="type"):
    """The generation failed; ``error`` is a machine-readable code."""

    schema_version: int = SCHEMA_VERSION
    request_id: str
    user_id: str
    org_id: str
    generation: AttemptId
    error: Annotated[
        str,
        msgspec.Meta(
            description="Machine-readable code, e.g. invalid_request (the request did not decode: "
            "'message' says why), forbidden_identity (its publisher may not claim its user_id or "
            "org_id), deadline_exceeded, model_node_failed, store_unavailable (Redis was away: retry), "
            "internal_error"
        ),
    ]
    message: str
    retryable: bool = False


class Alive(msgspec.Struct, kw_only=True, tag=ALIVE, tag_field="type"):
    """The attempt is still working (waiting for its first token, or between tokens): sent in
    batches only, for an attempt that published nothing for ``WORKER_ALIVE_SECONDS``, so the
    gateway's watchdog (``REPLY_STALL_SECONDS``) tells a slow generation from a dead one.
    ``chunks`` is how many text frames the attempt has made so far."""

    schema_version: int = SCHEMA_VERSION
    request_id: str
    user_id: str
    org_id: str
    generation: AttemptId
    chunks: int


Reply = TokenChunk | ChatDone | ChatError | Alive


class ReplyBatch(msgspec.Struct, kw_only=True, tag=BATCH, tag_field="type"):
    """Replies of one or more requests bound for one reply queue, in publication order.

    Only requests that asked for ``reply_mode = "batch"`` get their replies this way. The frames of
    one request keep their order (within a batch and across batches); a request's frames may be
    spread over several batches, and one batch may hold frames of many requests and users, so a
    reader routes and checks every frame by its own ``request_id`` and ``user_id``.
    """

    schema_version: int = SCHEMA_VERSION
    frames: list[TokenChunk | ChatDone | ChatError | Alive]


# What a reply queue receives: a single reply (reply_mode "message") or a batch of them.
ReplyMessage = TokenChunk | ChatDone | ChatError | Alive | ReplyBatch


class Cancel(msgspec.Struct, kw_only=True, tag=CANCEL, tag_field="type"):
    """Stop a generation; broadcast on the control (cancel) fanout exchange to every worker.

    ``grace`` > 0 (a client that disconnected and may resume, ``RESUME_GRACE_SECONDS``): the worker
    stops the generation only if no :class:`Resume` for it arrives within that many seconds.
    ``reply_to`` (when set: the canceller's reply queue) makes a stale cancel harmless: a worker
    ignores it once the generation's replies were re-pointed elsewhere by a Resume."""

    schema_version: int = SCHEMA_VERSION
    request_id: str
    user_id: str
    org_id: str
    reason: Literal["client_disconnected", "deadline_exceeded", "user_cancelled", "stalled"]
    trace_id: str = ""
    grace: float = 0.0
    reply_to: str = ""


class Resume(msgspec.Struct, kw_only=True, tag=RESUME, tag_field="type"):
    """Re-point a running generation's replies: broadcast on the control (cancel) fanout exchange.

    The worker running ``request_id`` for ``user_id`` (the gateway sets ``user_id`` from the
    verified token, never from the client) publishes the attempt's text frames from ``from_seq``
    on (from its per-attempt buffer) and everything after them to ``reply_to``, under the same
    ``generation``, and drops a pending grace cancel. A worker not running it ignores it."""

    schema_version: int = SCHEMA_VERSION
    request_id: str
    user_id: str
    org_id: str
    reply_to: str
    from_seq: int = 0
    trace_id: str = ""


class GenerationFinished(msgspec.Struct, kw_only=True, tag="generation.finished", tag_field="type"):
    """A generation ended, published by the worker on the events exchange (routing key
    ``generation.finished``) before it acks the request: the usage ledger records it, exactly once
    per ``request_id`` (a redelivered request's second report is ignored).

    ``outcome``: ``done``, ``cancelled`` (client gone or user cancel: the tokens produced so far),
    ``failed`` or ``expired`` (past the deadline). ``prompt_tokens`` is 0 when the model stopped
    before reporting it.
    """

    schema_version: int = SCHEMA_VERSION
    request_id: str
    user_id: str
    org_id: str
    key_id: str = ""
    api: str = "chat"
    model: str
    outcome: Literal["done", "cancelled", "failed", "expired"]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    duration_ms: float = 0.0
    finished_at: float
    trace_id: str = ""


class UsageBatch(msgspec.Struct, kw_only=True, tag="generation.finished.batch", tag_field="type"):
    """Several :class:`GenerationFinished` events in one message (same exchange and routing key
    ``generation.finished``, AMQP ``type`` ``generation.finished.batch``): a worker gathers the
    usage of the generations that ended within one tick (``USAGE_FLUSH_MS``) and publishes them
    together, confirmed before it acks any of their requests. Readers treat it as its events, in
    order; a reader of the events exchange must accept both forms."""

    schema_version: int = SCHEMA_VERSION
    events: list[GenerationFinished]


class SessionEvent(msgspec.Struct, kw_only=True, tag="session.event", tag_field="type"):
    """A session changed, finished, or spilled turns over its Redis cap; routing key is ``event``.

    ``session.finished`` and ``session.spilled`` reach the archiver; ``version`` is the session's
    version when the event was sent.
    """

    schema_version: int = SCHEMA_VERSION
    event: Literal["session.updated", "session.finished", "session.spilled"]
    request_id: str
    user_id: str
    org_id: str
    session_id: str
    version: int
    at: float
    trace_id: str = ""


encoder = msgspec.json.Encoder()
request_decoder = msgspec.json.Decoder(ChatRequest)
embed_request_decoder = msgspec.json.Decoder(EmbedRequest)


class _Kind(msgspec.Struct):
    type: str = CHAT_REQUEST


_kind_decoder = msgspec.json.Decoder(_Kind)


def decode_request(body: bytes) -> ChatRequest | EmbedRequest:
    """A request from the request queue, by its ``type`` (a ChatRequest when it has none, as
    integrators wrote them before embeddings existed). Raises msgspec's errors when invalid."""
    if _kind_decoder.decode(body).type == EMBED_REQUEST:
        return embed_request_decoder.decode(body)
    return request_decoder.decode(body)


reply_decoder = msgspec.json.Decoder(ReplyMessage)
cancel_decoder = msgspec.json.Decoder(Cancel)
# What the control (cancel) fanout carries: cancels and resumes.
control_decoder = msgspec.json.Decoder(Cancel | Resume)
event_decoder = msgspec.json.Decoder(SessionEvent)
# What the ledger queue carries: single usage events (older workers, integrators) and batches.
usage_decoder = msgspec.json.Decoder(GenerationFinished | UsageBatch)

# Every message type on the broker, in contract order (the AsyncAPI document lists these).
ALL_MESSAGES: tuple[type[msgspec.Struct], ...] = (
    ChatRequest,
    EmbedRequest,
    TokenChunk,
    ChatDone,
    ChatError,
    Alive,
    ReplyBatch,
    Cancel,
    Resume,
    SessionEvent,
    GenerationFinished,
    UsageBatch,
)
