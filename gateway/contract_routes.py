"""The HTTP API's routes as clients see them: method, path, owning service, bodies, answers.

``gateway.contract`` renders this table as the OpenAPI document; the contract tests check it
against the routes the auth and gateway apps register. Add a route to an app, add it here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from auth.schemas import (
    LoginRequest,
    PasswordChangeRequest,
    RefreshRequest,
    RegisterRequest,
    RoleRequest,
)
from gateway import contract_models as m
from gateway import ollama_api, ollama_models
from gateway.embeddings import EmbeddingsBody
from gateway.openai_requests import CompletionBody, LegacyCompletionBody
from gateway.validation import SESSION_ID_PATTERN, ChatBody, JobBody

__all__ = ["OPERATIONS", "RATE_HEADERS", "Access", "Operation", "Reply", "Service"]

Access = Literal["public", "bearer", "admin"]
Service = Literal["auth", "gateway"]


@dataclass(frozen=True)
class Reply:
    """A success response: its body schema (a Struct; None for no body) and headers."""

    description: str
    schema: type | None = None
    headers: tuple[str, ...] = ()
    events: Mapping[str, Any] | None = None  # when set: also text/event-stream, one event's schema
    ndjson: type | None = None  # when set: also application/x-ndjson, one line's schema
    media: tuple[str, ...] = ()  # bodies that are not JSON (the chat page): their media types


@dataclass(frozen=True)
class Operation:
    """One route as clients see it; ``service`` says which app serves it."""

    method: str
    path: str
    service: Service
    operation_id: str
    tag: str
    summary: str
    replies: Mapping[int, Reply]
    access: Access = "bearer"
    body: type | None = None
    body_example: Mapping[str, Any] | None = None
    parameters: tuple[Mapping[str, Any], ...] = ()
    errors: Mapping[int, tuple[str, ...]] = field(default_factory=dict)
    description: str = ""


def _path_param(name: str, pattern: str | None = None, description: str = "") -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "minLength": 1}
    if pattern:
        schema["pattern"] = pattern
    return {"name": name, "in": "path", "required": True, "schema": schema, "description": description}


def _query_int(name: str, minimum: int, maximum: int, description: str) -> dict[str, Any]:
    schema = {"type": "integer", "minimum": minimum, "maximum": maximum}
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


SESSION_ID = _path_param("session_id", SESSION_ID_PATTERN.pattern, "one of the caller's sessions")
JOB_ID = _path_param("job_id", "^[A-Za-z0-9._:-]{1,128}$", "as returned by POST /jobs")
USER_ID = _path_param("user_id", None, "as returned by /register or /admin/users")

CHAT_ERRORS: Mapping[int, tuple[str, ...]] = {
    400: (
        "invalid_session_id",
        "empty_prompt",
        "invalid_model",
        "unknown_model",
        "model_not_found",
        "model_rejected_request",
    ),
    413: ("prompt_too_long",),
    502: (
        "generation_interrupted",
        "resume_unavailable",
        "model_node_failed",
        "model_stream_failed",
        "model_error",
    ),
    503: (
        "queue_full",
        "broker_unavailable",
        "model_busy",
        "model_unavailable",
        "no_model_node",
        "store_unavailable",
    ),
    504: ("deadline_exceeded", "generation_stalled"),
}
RATE_HEADERS = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")


def _json_data(schema: Mapping[str, Any]) -> dict[str, Any]:
    """An SSE ``data`` field holding a JSON document."""
    return {"type": "string", "contentMediaType": "application/json", "contentSchema": dict(schema)}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


# Schemas of one event of a text/event-stream response ({"event", "data"}); heartbeats are comments.
NATIVE_EVENTS: Mapping[str, Any] = {
    "description": (
        '`event: token` / `data: {"content", "seq"}` per run of text, then `event: done` (usage) or '
        '`event: error` / `data: {"error", "message"}`. Lines starting with `:` are heartbeats. '
        "Every event has an `id:`: tokens their `seq`, the final event the next number; resume "
        "after a cut with `GET /chat/{request_id}/events` and `Last-Event-ID`."
    ),
    "type": "object",
    "required": ["event", "data", "id"],
    "properties": {
        "event": {"enum": ["token", "done", "error"]},
        "id": {"type": "string", "pattern": "^[0-9]+$"},
    },
    "if": {"properties": {"event": {"const": "token"}}},
    "then": {"properties": {"data": _json_data(_ref("TokenEvent"))}},
    "else": {
        "if": {"properties": {"event": {"const": "done"}}},
        "then": {"properties": {"data": _json_data(_ref("DoneEvent"))}},
        "else": {"properties": {"data": _json_data(_ref("Error"))}},
    },
}
OPENAI_EVENTS: Mapping[str, Any] = {
    "description": (
        "OpenAI's stream: `data: {chat.completion.chunk}` per run of text, then `data: [DONE]`; a "
        'failure mid-stream is a `data: {"error": {...}}` line.'
    ),
    "type": "object",
    "required": ["data"],
    "if": {"properties": {"data": {"const": "[DONE]"}}},
    "else": {"properties": {"data": _json_data({"anyOf": [_ref("CompletionChunk"), _ref("OpenAIError")]})}},
}

OPENAI_TEXT_EVENTS: Mapping[str, Any] = {
    "description": "`data: {text_completion}` per run of text, then `data: [DONE]`.",
    "type": "object",
    "required": ["data"],
    "if": {"properties": {"data": {"const": "[DONE]"}}},
    "else": {"properties": {"data": _json_data({"anyOf": [_ref("TextCompletion"), _ref("OpenAIError")]})}},
}

OLLAMA_CHAT_ERRORS: Mapping[int, tuple[str, ...]] = {
    **CHAT_ERRORS,
    400: (
        "invalid_session_id",
        "empty_prompt",
        "invalid_model",
        "unsupported_parameter",
        "unsupported_content",
        "invalid_parameter",
        "model_rejected_request",
    ),
    404: ("model_not_found",),
}
_MANAGEMENT = (
    ("POST", "/api/pull", "ollamaPull", "Pull a model: refused"),
    ("POST", "/api/push", "ollamaPush", "Push a model: refused"),
    ("POST", "/api/create", "ollamaCreate", "Create a model: refused"),
    ("POST", "/api/copy", "ollamaCopy", "Copy a model: refused"),
    ("DELETE", "/api/delete", "ollamaDelete", "Delete a model: refused"),
    ("POST", "/api/blobs/{digest}", "ollamaPushBlob", "Upload a blob: refused"),
)


def _ollama_operations() -> tuple[Operation, ...]:
    def stream_reply(schema: type, what: str) -> Reply:
        return Reply(
            f"{what}: an NDJSON stream (default) or, with `stream: false`, one body.",
            schema,
            RATE_HEADERS,
            ndjson=schema,
        )

    generation = "Spends one request from the rate limit. An optional `session_id` records the exchange."
    return (
        Operation(
            "POST",
            "/api/chat",
            "gateway",
            "ollamaChat",
            "ollama",
            "Ollama chat (tools, `format`)",
            {200: stream_reply(m.OllamaChatResponse, "The answer")},
            body=ollama_api.OllamaChatBody,
            body_example={"model": "llama3.2", "messages": [{"role": "user", "content": "Hello"}]},
            errors=OLLAMA_CHAT_ERRORS,
            description=generation,
        ),
        Operation(
            "POST",
            "/api/generate",
            "gateway",
            "ollamaGenerate",
            "ollama",
            "Ollama generate",
            {200: stream_reply(m.OllamaGenerateResponse, "The answer")},
            body=ollama_api.OllamaGenerateBody,
            body_example={"model": "llama3.2", "prompt": "Why is the sky blue?"},
            errors=OLLAMA_CHAT_ERRORS,
            description=generation,
        ),
        Operation(
            "POST",
            "/api/embed",
            "gateway",
            "ollamaEmbed",
            "ollama",
            "Ollama embeddings (a batch)",
            {200: Reply("One vector per input.", m.OllamaEmbed, RATE_HEADERS)},
            body=ollama_models.EmbedBody,
            body_example={"model": "llama3.2", "input": ["a", "b"]},
            errors=OLLAMA_CHAT_ERRORS,
            description="Spends one request from the rate limit.",
        ),
        Operation(
            "POST",
            "/api/embeddings",
            "gateway",
            "ollamaEmbeddings",
            "ollama",
            "Ollama's older single embedding",
            {200: Reply("The vector.", m.OllamaEmbedding, RATE_HEADERS)},
            body=ollama_models.EmbeddingsBody,
            body_example={"model": "llama3.2", "prompt": "a"},
            errors=OLLAMA_CHAT_ERRORS,
            description="Spends one request from the rate limit.",
        ),
        Operation(
            "GET",
            "/api/tags",
            "gateway",
            "ollamaTags",
            "ollama",
            "Models served (Ollama's names)",
            {200: Reply("The models the workers find on healthy nodes.", m.OllamaModelList)},
        ),
        Operation(
            "POST",
            "/api/show",
            "gateway",
            "ollamaShow",
            "ollama",
            "One model",
            {200: Reply("The model.", m.OllamaShow)},
            body=ollama_models.ShowBody,
            body_example={"model": "llama3.2"},
            errors={404: ("model_not_found",), 400: ("invalid_model",)},
        ),
        Operation(
            "GET",
            "/api/ps",
            "gateway",
            "ollamaPs",
            "ollama",
            "Models loaded",
            {200: Reply("The models served, as loaded.", m.OllamaModelList)},
        ),
        Operation(
            "GET",
            "/api/version",
            "gateway",
            "ollamaVersion",
            "ollama",
            "The Ollama API version spoken",
            {200: Reply("The version.", m.OllamaVersion)},
        ),
        *(
            Operation(
                method,
                path,
                "gateway",
                operation_id,
                "ollama",
                summary,
                {},
                parameters=(_path_param("digest"),) if "{digest}" in path else (),
                errors={403: ("model_management_disabled",)},
                description="The operators choose the models served; this is always 403.",
            )
            for method, path, operation_id, summary in _MANAGEMENT
        ),
    )


OLLAMA_OPERATIONS = _ollama_operations()

OPERATIONS: tuple[Operation, ...] = (
    # -- auth service ------------------------------------------------------------------------------
    Operation(
        "POST",
        "/register",
        "auth",
        "register",
        "auth",
        "Create an account",
        {201: Reply("The account was created.", m.RegisteredUser)},
        access="public",
        body=RegisterRequest,
        body_example={
            "username": "testuser",
            "password": "testpass123",
            "email": "test@company.com",
            "organization": "TestOrg",
        },
        errors={
            400: (
                "invalid_username",
                "invalid_email",
                "invalid_organization",
                "weak_password",
                "invalid_invitation",
            ),
            403: ("registration_closed", "invitation_email_mismatch"),
            409: ("username_taken", "email_taken", "organization_taken"),
            429: ("registration_throttled",),
            503: ("busy",),
        },
        description=(
            "Joins an organization by `invitation_token` or by an allowed email domain; otherwise 403 "
            "`registration_closed`, or with open sign-up a personal organization named `organization` "
            "(an existing name is 409: naming an organization never joins it)."
        ),
    ),
    Operation(
        "POST",
        "/login",
        "auth",
        "login",
        "auth",
        "Exchange a username and password for tokens",
        {200: Reply("An access token (JWT) and a refresh token.", m.TokenPair)},
        access="public",
        body=LoginRequest,
        body_example={"username": "testuser", "password": "testpass123"},
        errors={
            401: ("invalid_credentials",),
            403: ("user_disabled",),
            429: ("too_many_attempts",),
            503: ("busy",),
        },
    ),
    Operation(
        "POST",
        "/refresh",
        "auth",
        "refresh",
        "auth",
        "Rotate a refresh token for a new token pair",
        {200: Reply("A new token pair; the refresh token sent is spent.", m.TokenPair)},
        access="public",
        body=RefreshRequest,
        errors={401: ("invalid_refresh_token", "refresh_token_reused"), 403: ("user_disabled",)},
        description="Reusing a spent refresh token revokes its whole login (token family).",
    ),
    Operation(
        "POST",
        "/logout",
        "auth",
        "logout",
        "auth",
        "Revoke this access token and its login's refresh tokens",
        {204: Reply("Logged out.")},
    ),
    Operation(
        "POST",
        "/logout/all",
        "auth",
        "logoutAll",
        "auth",
        "Revoke every login of the caller",
        {204: Reply("Every access and refresh token of the caller is revoked.")},
    ),
    Operation(
        "GET",
        "/me",
        "auth",
        "getMe",
        "auth",
        "The caller's account",
        {200: Reply("The caller.", m.UserView)},
    ),
    Operation(
        "POST",
        "/me/password",
        "auth",
        "changePassword",
        "auth",
        "Change the caller's password",
        {204: Reply("Changed; every login of the caller, this one included, is ended: log in again.")},
        body=PasswordChangeRequest,
        errors={400: ("weak_password",), 403: ("invalid_current_password",), 429: ("too_many_attempts",)},
    ),
    Operation(
        "GET",
        "/.well-known/jwks.json",
        "auth",
        "getJwks",
        "auth",
        "Public keys that verify access tokens (JWKS)",
        {200: Reply("The current key first, then previous ones still accepted.", m.Jwks)},
        access="public",
    ),
    Operation(
        "GET",
        "/admin/users",
        "auth",
        "listUsers",
        "admin",
        "List users (admin)",
        {200: Reply("One page of users; `next` is the cursor of the next page.", m.UserPage)},
        access="admin",
        parameters=(
            _query_int("limit", 1, 200, "page size"),
            {
                "name": "cursor",
                "in": "query",
                "required": False,
                "schema": {"type": "string"},
                "description": "the `next` value of the previous page",
            },
        ),
        errors={400: ("invalid_parameter", "invalid_cursor")},
    ),
    Operation(
        "POST",
        "/admin/users/{user_id}/disable",
        "auth",
        "disableUser",
        "admin",
        "Disable a user (admin); their tokens stop working at once",
        {200: Reply("The user, now disabled.", m.UserView)},
        access="admin",
        parameters=(USER_ID,),
        errors={404: ("user_not_found",), 409: ("cannot_modify_self",)},
    ),
    Operation(
        "POST",
        "/admin/users/{user_id}/enable",
        "auth",
        "enableUser",
        "admin",
        "Enable a disabled user (admin)",
        {200: Reply("The user, now enabled.", m.UserView)},
        access="admin",
        parameters=(USER_ID,),
        errors={404: ("user_not_found",), 409: ("cannot_modify_self",)},
    ),
    Operation(
        "POST",
        "/admin/users/{user_id}/role",
        "auth",
        "setUserRole",
        "admin",
        "Change a user's role (admin)",
        {200: Reply("The user with the new role.", m.UserView)},
        access="admin",
        body=RoleRequest,
        body_example={"role": "admin"},
        parameters=(USER_ID,),
        errors={400: ("invalid_role",), 404: ("user_not_found",), 409: ("cannot_modify_self",)},
    ),
    # -- gateway: chat -----------------------------------------------------------------------------
    Operation(
        "POST",
        "/chat",
        "gateway",
        "chat",
        "chat",
        "Chat: a streamed answer (default), one JSON answer, or a job",
        {
            200: Reply(
                "`stream: true` (default): an event stream; `stream: false`: the whole answer.",
                m.ChatAnswer,
                (*RATE_HEADERS, "X-Chat-Request-Id"),
                events=NATIVE_EVENTS,
            ),
            202: Reply("`async: true`: the job was queued; poll `status_url`.", m.JobAccepted, ("Location",)),
        },
        body=ChatBody,
        body_example={"session_id": "session123", "prompt": "שלום, מה שלומך?"},
        errors={**CHAT_ERRORS, 400: (*CHAT_ERRORS[400], "unsupported_parameter", "invalid_parameter")},
        description="Spends one request from the caller's rate limit.",
    ),
    Operation(
        "GET",
        "/chat/{request_id}/events",
        "gateway",
        "resumeChat",
        "chat",
        "Resume a chat stream after a cut, on any gateway",
        {
            200: Reply(
                "The events with an id above `Last-Event-ID` (all without it), ending with `done` or "
                "`error`: from the generation still running, or from the finished answer.",
                None,
                ("X-Chat-Request-Id",),
                events=NATIVE_EVENTS,
            )
        },
        parameters=(
            _path_param("request_id", "^[0-9a-f]{1,64}$", "the `X-Chat-Request-Id` of a `POST /chat` stream"),
            {
                "name": "Last-Event-ID",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "pattern": "^[0-9]{1,9}$"},
                "description": "the `id:` of the last event received",
            },
        ),
        errors={400: ("invalid_last_event_id",), 404: ("unknown_request",)},
        description=(
            "Only the caller's own requests (anyone else's: 404). No second generation is started; "
            "a finished answer can be resumed for `RESUME_RECORD_SECONDS` past its deadline."
        ),
    ),
    Operation(
        "DELETE",
        "/chat/{request_id}",
        "gateway",
        "stopChat",
        "chat",
        "Stop a chat stream's generation now",
        {204: Reply("The generation is told to stop (nothing to do when it already ended).")},
        parameters=(
            _path_param("request_id", "^[0-9a-f]{1,64}$", "the `X-Chat-Request-Id` of a `POST /chat` stream"),
        ),
        errors={404: ("unknown_request",)},
        description=(
            "A disconnect leaves a resumable stream `RESUME_GRACE_SECONDS` to come back; this "
            "stops it at once (the chat page's Stop button). Only the caller's own requests."
        ),
    ),
    Operation(
        "POST",
        "/v1/chat/completions",
        "gateway",
        "createChatCompletion",
        "openai",
        "OpenAI-compatible chat completion",
        {
            200: Reply(
                "A chat completion, or its chunks when `stream` is true.",
                m.ChatCompletion,
                RATE_HEADERS,
                OPENAI_EVENTS,
            )
        },
        body=CompletionBody,
        body_example={"model": "llama3.2", "messages": [{"role": "user", "content": "Hello"}]},
        errors={
            **CHAT_ERRORS,
            400: (*CHAT_ERRORS[400], "unsupported_parameter", "unsupported_content", "invalid_parameter"),
        },
        description=(
            "Works with OpenAI's clients: base URL `.../v1`, API key = access token. An optional "
            "`session_id` records the exchange in that session. Spends one request from the rate limit."
        ),
    ),
    Operation(
        "GET",
        "/v1/models",
        "gateway",
        "listModels",
        "openai",
        "Models that can be asked for",
        {200: Reply("The models served, one entry per model (`x:latest` is listed as `x`).", m.ModelList)},
    ),
    Operation(
        "GET",
        "/v1/models/{model_id}",
        "gateway",
        "retrieveModel",
        "openai",
        "One model (`models.retrieve`)",
        {200: Reply("The model.", m.Model)},
        parameters=(_path_param("model_id", None, "a model id from GET /v1/models; `x:latest` is `x`"),),
        errors={404: ("model_not_found",)},
    ),
    Operation(
        "POST",
        "/v1/completions",
        "gateway",
        "createCompletion",
        "openai",
        "OpenAI's legacy text completion (one prompt, answered like Ollama's generate)",
        {
            200: Reply(
                "A text completion, or its chunks when `stream` is true.",
                m.TextCompletion,
                RATE_HEADERS,
                OPENAI_TEXT_EVENTS,
            )
        },
        body=LegacyCompletionBody,
        body_example={"model": "llama3.2", "prompt": "Say hello", "max_tokens": 16},
        errors={
            **CHAT_ERRORS,
            400: (*CHAT_ERRORS[400], "unsupported_parameter", "invalid_parameter"),
        },
        description="Spends one request from the rate limit.",
    ),
    Operation(
        "POST",
        "/v1/embeddings",
        "gateway",
        "createEmbeddings",
        "openai",
        "Embeddings of one text or a batch, through the workers",
        {
            200: Reply(
                "One vector per input, in order; usage counts the input tokens.",
                m.EmbeddingList,
                RATE_HEADERS,
            )
        },
        body=EmbeddingsBody,
        body_example={"model": "llama3.2", "input": ["first text", "second text"]},
        errors={
            **CHAT_ERRORS,
            400: (*CHAT_ERRORS[400], "unsupported_parameter", "unsupported_content", "invalid_parameter"),
        },
        description="Spends one request from the rate limit, whatever the batch size.",
    ),
    *OLLAMA_OPERATIONS,
    # -- gateway: jobs -----------------------------------------------------------------------------
    Operation(
        "POST",
        "/jobs",
        "gateway",
        "createJob",
        "jobs",
        "Queue a chat as a job",
        {202: Reply("Queued; poll `status_url`.", m.JobAccepted, ("Location", *RATE_HEADERS))},
        body=JobBody,
        body_example={"prompt": "Summarise our travel policy", "session_id": "session123"},
        errors={
            400: (
                "invalid_session_id",
                "empty_prompt",
                "invalid_model",
                "unknown_model",
                "unsupported_parameter",
            ),
            413: ("prompt_too_long",),
            503: ("queue_full", "broker_unavailable"),
        },
        description=(
            "Send `prompt` (optionally in a session) or `messages`. Spends one request from the rate limit."
        ),
    ),
    Operation(
        "GET",
        "/jobs/{job_id}",
        "gateway",
        "getJob",
        "jobs",
        "A job's status and, once done, its answer",
        {200: Reply("The job.", m.JobView)},
        parameters=(JOB_ID,),
        errors={400: ("invalid_job_id",), 404: ("job_not_found",)},
    ),
    Operation(
        "DELETE",
        "/jobs/{job_id}",
        "gateway",
        "cancelJob",
        "jobs",
        "Cancel a queued or running job",
        {
            200: Reply("The job had ended meanwhile; its final state.", m.JobView),
            202: Reply("Cancelled; the generation is stopped.", m.JobView),
        },
        parameters=(JOB_ID,),
        errors={400: ("invalid_job_id",), 404: ("job_not_found",), 409: ("job_finished",)},
    ),
    # -- gateway: sessions -------------------------------------------------------------------------
    Operation(
        "GET",
        "/sessions",
        "gateway",
        "listSessions",
        "sessions",
        "The caller's sessions, most recent first",
        {200: Reply("One page; `next` is the cursor of the next page or null.", m.SessionPage)},
        parameters=(
            _query_int("limit", 1, 100, "page size (default 20)"),
            _query_int("cursor", 0, 10_000_000, "the `next` value of the previous page"),
        ),
        errors={400: ("invalid_parameter",)},
    ),
    Operation(
        "GET",
        "/sessions/{session_id}",
        "gateway",
        "getSession",
        "sessions",
        "One of the caller's sessions with every turn (from Redis or the archive)",
        {200: Reply("The session.", m.SessionDetail)},
        parameters=(SESSION_ID,),
        errors={400: ("invalid_session_id",), 404: ("session_not_found",), 503: ("archive_unavailable",)},
    ),
    Operation(
        "DELETE",
        "/sessions/{session_id}",
        "gateway",
        "deleteSession",
        "sessions",
        "Erase a session from Redis and the archive",
        {204: Reply("Erased.")},
        parameters=(SESSION_ID,),
        errors={400: ("invalid_session_id",), 404: ("session_not_found",), 503: ("archive_unavailable",)},
    ),
    Operation(
        "POST",
        "/sessions/{session_id}/end",
        "gateway",
        "endSession",
        "sessions",
        "End a session now (the archiver stores it)",
        {
            200: Reply("It was already archived.", m.SessionEnded),
            202: Reply("Ended; archiving follows.", m.SessionEnded),
        },
        parameters=(SESSION_ID,),
        errors={400: ("invalid_session_id",), 404: ("session_not_found",), 503: ("archive_unavailable",)},
    ),
    # -- gateway: operations -----------------------------------------------------------------------
    Operation(
        "GET",
        "/health",
        "gateway",
        "health",
        "operations",
        "Liveness",
        {200: Reply("The process serves requests.", m.Health)},
        access="public",
    ),
    Operation(
        "GET",
        "/ready",
        "gateway",
        "ready",
        "operations",
        "Readiness: a chat can be served",
        {200: Reply("Ready.", m.Ready)},
        access="public",
        errors={503: ("not_ready", "draining")},
    ),
    Operation(
        "GET",
        "/openapi.json",
        "gateway",
        "getOpenApi",
        "operations",
        "This document",
        {200: Reply("The OpenAPI 3.1 document of the whole HTTP API.")},
        access="public",
    ),
    # -- gateway: the chat page (gateway/page.py) --------------------------------------------------------
    Operation(
        "GET",
        "/",
        "gateway",
        "getChatPage",
        "page",
        "The chat page for a browser",
        {200: Reply("The page (HTML); its scripts and styles are under /assets/.", media=("text/html",))},
        access="public",
        description="Served with its own strict Content-Security-Policy (scripts, styles and "
        "fetch from this origin only, no inline script, Trusted Types) and an ETag.",
    ),
    Operation(
        "GET",
        "/assets/{name}",
        "gateway",
        "getChatPageAsset",
        "page",
        "A script, stylesheet or icon of the chat page",
        {
            200: Reply(
                "The file: a JavaScript module, a stylesheet, an icon or a library's license.",
                media=("text/javascript", "text/css", "image/svg+xml", "text/plain"),
            )
        },
        access="public",
        parameters=(_path_param("name", r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$", "a file name"),),
        errors={404: ("not_found",)},
    ),
)
