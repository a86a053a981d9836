"""The HTTP API contract: an OpenAPI 3.1 document of every public route, auth and gateway alike.

One base URL (HAProxy) serves both services, so one document describes them; the gateway serves
the committed file at ``GET /openapi.json`` (:mod:`gateway.apidoc`). The routes are the table in
:mod:`gateway.contract_routes`; request bodies are the msgspec Structs the handlers decode
(``gateway.validation``, ``gateway.openai``, ``auth.schemas``), response bodies the Structs of
:mod:`gateway.contract_models`. ``python -m gateway.contract`` (``make contract``) rewrites
``gateway/openapi.json``. Tests fail when the committed file drifts from the code, when the
document and the routes the apps register disagree, and when the real services, driven by
requests generated from the document (schemathesis), answer otherwise than it says.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import msgspec

from auth.passwords import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH
from auth.schemas import MAX_EMAIL_LENGTH, ROLES, USERNAME_PATTERN
from gateway import contract_models as m
from gateway.apidoc import OPENAPI_PATH
from gateway.contract_identity import IDENTITY_OPERATIONS, IDENTITY_TAGS
from gateway.contract_routes import OPERATIONS as CORE_OPERATIONS
from gateway.contract_routes import RATE_HEADERS, Operation, Reply, Service
from gateway.validation import MODEL_PATTERN, SESSION_ID_PATTERN

__all__ = ["OPENAPI_PATH", "OPERATIONS", "Operation", "openapi", "render"]

VERSION = "1.0.0"
OPERATIONS: tuple[Operation, ...] = (*CORE_OPERATIONS, *IDENTITY_OPERATIONS)

# -- responses every operation shares -----------------------------------------------------------------
_COMMON_ERRORS: Mapping[int, tuple[str, ...]] = {
    408: ("request_timeout",),
    429: ("rate_limited",),
    503: ("unavailable",),
}
_BODY_ERRORS: Mapping[int, tuple[str, ...]] = {
    400: ("malformed_json", "malformed_body", "invalid_request"),
    413: ("body_too_large",),
    415: ("unsupported_media_type",),
}
_AUTH_ERRORS: Mapping[Service, Mapping[int, tuple[str, ...]]] = {
    "gateway": {
        401: ("missing_token", "invalid_token", "token_expired", "token_not_yet_valid", "token_revoked"),
        403: ("user_disabled",),
    },
    "auth": {
        401: ("missing_token", "invalid_token", "token_expired", "token_revoked"),
        403: ("user_disabled",),
    },
}
_ERROR_NOTES: Mapping[int, str] = {
    401: "The bearer token is missing, invalid, expired or revoked.",
    403: "The account is disabled, or the route needs a role the caller lacks.",
    408: "The request's headers or body did not arrive in time (HAProxy, or the service's read deadline).",
    413: "The body exceeds the service's limit (`MAX_BODY_BYTES`, `AUTH_MAX_BODY_BYTES`).",
    429: "Too many requests (per user, per organization, per client address, or failed logins); "
    "wait `Retry-After` seconds.",
    503: "Overloaded or a backing service is unavailable; retry after `Retry-After` seconds when given.",
}
# Errors HAProxy itself answers keep the native shape, under /v1 too.
_FRONT_DOOR_STATUSES = frozenset({408, 429, 502, 503, 504})
_ERROR_HEADERS: Mapping[int, tuple[tuple[str, bool], ...]] = {
    401: (("WWW-Authenticate", False),),
    429: (("Retry-After", True), *((name, False) for name in RATE_HEADERS)),
    503: (("Retry-After", False),),
}

HEADERS: Mapping[str, Mapping[str, Any]] = {
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "schema": {"type": "integer", "minimum": 0},
    },
    "RateLimit-Limit": {"description": "Requests allowed per window.", "schema": {"type": "integer"}},
    "RateLimit-Remaining": {"description": "Requests left in the window.", "schema": {"type": "integer"}},
    "RateLimit-Reset": {"description": "Seconds until capacity returns.", "schema": {"type": "integer"}},
    "WWW-Authenticate": {"description": "The bearer challenge.", "schema": {"type": "string"}},
    "Location": {"description": "The job's status URL.", "schema": {"type": "string"}},
    "X-Chat-Request-Id": {
        "description": "The server's id of this chat request (as `request_id` in `done`): resume "
        "the stream with `GET /chat/{request_id}/events`.",
        "schema": {"type": "string"},
    },
    "Allow": {"description": "The methods the path serves.", "schema": {"type": "string"}},
}

DESCRIPTION = """\
The enterprise chat service behind one base URL (HAProxy, e.g. `http://localhost:8080`): the auth \
service (`/register`, `/login`, `/refresh`, `/logout`, `/logout/all`, `/me`, `/me/...`, `/org`, \
`/org/...`, `/usage`, `/.well-known/`, `/admin/`) and the chat gateways (everything else).

**Authentication**: `Authorization: Bearer <access token>` from `POST /login` (a JWT, verified \
with the keys at `/.well-known/jwks.json`), or, at the gateway, `Authorization: Bearer <API key>` \
(`ekey_...`, from `POST /me/api-keys`; scopes `chat` and `models`).

**Errors**: every error is JSON `{"error": "<machine_code>", "message": "<for humans>"}` with the \
status below; under `/v1/` the gateway answers in OpenAI's shape `{"error": {"message", "type", \
"param", "code"}}`, under `/api/` in Ollama's `{"error": "<for humans>", "code": "<machine_code>"}`. \
A method a path does not serve (or an unknown one) is `405 method_not_allowed`; \
an unknown path is `404 not_found`. `429` always carries `Retry-After`; rate-limited routes also send \
`RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`.

**Tracing**: a well-formed `X-Request-ID` is kept as the trace id and echoed back.

Prometheus `/metrics` is internal (scraped on the service network) and not part of this API: \
HAProxy answers it with 404.
"""

TAGS = (
    {"name": "auth", "description": "Accounts and tokens (auth service)."},
    {"name": "admin", "description": "User administration; needs the admin role (auth service)."},
    {"name": "chat", "description": "The native chat API."},
    {"name": "openai", "description": "OpenAI-compatible API (`/v1`)."},
    {
        "name": "ollama",
        "description": "Ollama's API (`/api`), for Ollama clients; model management is refused.",
    },
    {"name": "jobs", "description": "Asynchronous chats."},
    {"name": "sessions", "description": "The caller's conversations."},
    {"name": "operations", "description": "Health, readiness and this document."},
    *IDENTITY_TAGS,
    {"name": "page", "description": "The chat page for browsers and its assets."},
)


def _ref(name: str, kind: str = "schemas") -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _error_schema(op: Operation, status: int) -> dict[str, Any]:
    if op.path.startswith("/api/"):
        shape = "OllamaError"
    elif op.path.startswith("/v1/"):
        shape = "OpenAIError"
    else:
        return _ref("Error")
    if status in _FRONT_DOOR_STATUSES:
        return {"anyOf": [_ref(shape), _ref("Error")]}
    return _ref(shape)


def _error_codes(op: Operation) -> dict[int, tuple[str, ...]]:
    layers: list[Mapping[int, tuple[str, ...]]] = [_COMMON_ERRORS]
    if op.body is not None:
        layers.append(_BODY_ERRORS)
    if op.access != "public":
        layers.append(_AUTH_ERRORS[op.service])
    if op.access == "admin":
        layers.append({403: ("forbidden",)})
    layers.append(op.errors)
    codes: dict[int, tuple[str, ...]] = {}
    for layer in layers:
        for status, names in layer.items():
            codes[status] = tuple(dict.fromkeys((*codes.get(status, ()), *names)))
    return dict(sorted(codes.items()))


def _error_response(op: Operation, status: int, codes: tuple[str, ...]) -> dict[str, Any]:
    phrase = HTTPStatus(status).phrase
    note = _ERROR_NOTES.get(status, "")
    text = f"{phrase}. {note} Codes: {', '.join(f'`{c}`' for c in codes)}.".replace("  ", " ")
    response: dict[str, Any] = {
        "description": text,
        "content": {"application/json": {"schema": _error_schema(op, status)}},
    }
    if headers := _ERROR_HEADERS.get(status, ()):
        # A required header is written out: 3.1 ignores "required" beside a $ref.
        response["headers"] = {
            name: {**HEADERS[name], "required": True} if required else _ref(name, "headers")
            for name, required in headers
        }
    return response


def _success_response(reply: Reply) -> dict[str, Any]:
    response: dict[str, Any] = {"description": reply.description}
    content: dict[str, Any] = {}
    if reply.schema is not None:
        content["application/json"] = {"schema": _ref(reply.schema.__name__)}
    if reply.events is not None:
        content["text/event-stream"] = {"schema": dict(reply.events)}
    if reply.ndjson is not None:
        content["application/x-ndjson"] = {
            "schema": {
                "description": "Each line is one JSON document like this.",
                **_ref(reply.ndjson.__name__),
            }
        }
    for media in reply.media:
        content[media] = {"schema": {"type": "string"}}
    if content:
        response["content"] = content
    if reply.headers:
        response["headers"] = {name: _ref(name, "headers") for name in reply.headers}
    return response


def _operation(op: Operation) -> dict[str, Any]:
    out: dict[str, Any] = {"operationId": op.operation_id, "tags": [op.tag], "summary": op.summary}
    description = op.description
    if op.access == "admin":
        description = f"Needs the admin role. {description}".strip()
    if description:
        out["description"] = description
    if op.access == "public":
        out["security"] = []
    if not op.replies:  # a route that always refuses (Ollama's model management)
        out["x-always-refused"] = True
    if op.parameters:
        out["parameters"] = [dict(p) for p in op.parameters]
    if op.body is not None:
        media: dict[str, Any] = {"schema": _ref(op.body.__name__)}
        if op.body_example is not None:
            media["example"] = dict(op.body_example)
        out["requestBody"] = {"required": True, "content": {"application/json": media}}
    responses: dict[str, Any] = {}
    for status, reply in sorted(op.replies.items()):
        responses[str(status)] = _success_response(reply)
    for status, codes in _error_codes(op).items():
        responses[str(status)] = _error_response(op, status, codes)
    out["responses"] = responses
    return out


def _refine(schemas: dict[str, Any]) -> None:
    """Rules the handlers enforce beyond the Structs' types (answered 400 with their own codes)."""
    password = {"minLength": MIN_PASSWORD_LENGTH, "maxLength": MAX_PASSWORD_LENGTH}
    rules: dict[tuple[str, str], dict[str, Any]] = {
        ("ChatBody", "session_id"): {"pattern": SESSION_ID_PATTERN.pattern},
        ("RegisterRequest", "username"): {"pattern": f"^{USERNAME_PATTERN.pattern}$"},
        ("RegisterRequest", "password"): password,
        ("RegisterRequest", "email"): {"maxLength": MAX_EMAIL_LENGTH},
        ("PasswordChangeRequest", "new_password"): password,
        ("RoleRequest", "role"): {"enum": list(ROLES)},
        ("CompletionBody", "messages"): {"minItems": 1},
        ("CompletionBody", "n"): {"minimum": 1, "maximum": 1},
    }
    for (struct, prop), extra in rules.items():
        schemas[struct]["properties"][prop].update(extra)
    for struct in ("ChatBody", "JobBody"):
        model = schemas[struct]["properties"]["model"]
        model["anyOf"][0]["pattern"] = MODEL_PATTERN.pattern


def openapi() -> dict[str, Any]:
    """The whole document, built from :data:`OPERATIONS` and the Structs."""
    structs: list[type] = [
        m.Error,
        m.OpenAIError,
        m.OllamaError,
        m.TokenEvent,
        m.DoneEvent,
        m.CompletionChunk,
    ]
    for op in OPERATIONS:
        if op.body is not None:
            structs.append(op.body)
        structs.extend(r.schema for r in op.replies.values() if r.schema is not None)
    _, schemas = msgspec.json.schema_components(
        list(dict.fromkeys(structs)), ref_template="#/components/schemas/{name}"
    )
    _refine(schemas)
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Enterprise chat HTTP API", "version": VERSION, "description": DESCRIPTION},
        "tags": list(TAGS),
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "headers": dict(HEADERS),
            "responses": {
                "MethodNotAllowed": {
                    "description": "Any path, for a method it does not serve: `method_not_allowed`.",
                    "headers": {"Allow": _ref("Allow", "headers")},
                    "content": {"application/json": {"schema": _ref("Error")}},
                },
                "NotFound": {
                    "description": "Any unknown path: `not_found`.",
                    "content": {"application/json": {"schema": _ref("Error")}},
                },
            },
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "The access token from POST /login (or /refresh).",
                }
            },
        },
    }


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> None:
    OPENAPI_PATH.write_text(render(openapi()))
    print(f"wrote {OPENAPI_PATH}")


if __name__ == "__main__":
    main()
