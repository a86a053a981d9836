"""The gateway's route table: every route once, with who may call it and what it spends.

``create_app`` registers these; the middlewares read a route's :class:`Access` from here (no
second list of public or rate-limited paths), and ``tests/gateway/test_http_contract.py`` checks
the OpenAPI document against the same routes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.apidoc import openapi_document
from gateway.chat import chat
from gateway.embeddings import create_embeddings
from gateway.health import health, metrics, ready
from gateway.jobs import cancel_job, create_job, get_job
from gateway.ollama_api import ollama_chat, ollama_generate
from gateway.ollama_models import (
    ollama_embed,
    ollama_embeddings,
    ollama_management,
    ollama_ps,
    ollama_show,
    ollama_tags,
    ollama_version,
)
from gateway.openai import chat_completions, get_model, list_models
from gateway.openai_completions import completions
from gateway.page import asset, index
from gateway.resume import chat_events
from gateway.sessions import delete_own_session, end_own_session, get_own_session, list_own_sessions
from gateway.stop import stop_chat

__all__ = ["ROUTES", "Access", "Route", "access_of", "add_routes"]


class Access(enum.Enum):
    PUBLIC = "public"  # no token (probes, metrics on the internal network, the API document, the page)
    USER = "user"  # a verified, admitted token; checks the rate limit without spending
    GENERATION = "generation"  # as USER, and starts a generation: spends one from the rate limit


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    handler: Handler
    access: Access


ROUTES: tuple[Route, ...] = (
    Route("POST", "/chat", chat, Access.GENERATION),
    Route("GET", "/chat/{request_id}/events", chat_events, Access.USER),
    Route("DELETE", "/chat/{request_id}", stop_chat, Access.USER),  # the page's Stop button
    Route("POST", "/v1/chat/completions", chat_completions, Access.GENERATION),
    Route("GET", "/v1/models", list_models, Access.USER),
    Route("GET", "/v1/models/{model_id:.+}", get_model, Access.USER),
    Route("POST", "/v1/embeddings", create_embeddings, Access.GENERATION),
    Route("POST", "/v1/completions", completions, Access.GENERATION),
    Route("POST", "/api/chat", ollama_chat, Access.GENERATION),
    Route("POST", "/api/generate", ollama_generate, Access.GENERATION),
    Route("POST", "/api/embed", ollama_embed, Access.GENERATION),
    Route("POST", "/api/embeddings", ollama_embeddings, Access.GENERATION),
    Route("GET", "/api/tags", ollama_tags, Access.USER),
    Route("POST", "/api/show", ollama_show, Access.USER),
    Route("GET", "/api/ps", ollama_ps, Access.USER),
    Route("GET", "/api/version", ollama_version, Access.USER),
    *(
        Route(method, path, ollama_management, Access.USER)
        for method, path in (
            ("POST", "/api/pull"),
            ("POST", "/api/push"),
            ("POST", "/api/create"),
            ("POST", "/api/copy"),
            ("DELETE", "/api/delete"),
            ("POST", "/api/blobs/{digest}"),
        )
    ),
    Route("POST", "/jobs", create_job, Access.GENERATION),
    Route("GET", "/jobs/{job_id}", get_job, Access.USER),
    Route("DELETE", "/jobs/{job_id}", cancel_job, Access.USER),
    Route("GET", "/sessions", list_own_sessions, Access.USER),
    Route("GET", "/sessions/{session_id}", get_own_session, Access.USER),
    Route("DELETE", "/sessions/{session_id}", delete_own_session, Access.USER),
    Route("POST", "/sessions/{session_id}/end", end_own_session, Access.USER),
    Route("GET", "/health", health, Access.PUBLIC),
    Route("GET", "/ready", ready, Access.PUBLIC),
    Route("GET", "/metrics", metrics, Access.PUBLIC),
    Route("GET", "/openapi.json", openapi_document, Access.PUBLIC),
    Route("GET", "/", index, Access.PUBLIC),  # the chat page (gateway/page.py)
    Route("GET", "/assets/{name}", asset, Access.PUBLIC),
)

_ACCESS = {(route.method, route.path): route.access for route in ROUTES}
_PUBLIC_PATHS = frozenset(route.path for route in ROUTES if route.access is Access.PUBLIC)


def add_routes(app: web.Application) -> None:
    for route in ROUTES:
        app.router.add_route(route.method, route.path, route.handler)


def access_of(request: web.Request) -> Access:
    """The matched route's access; an unmatched request needs a token like any other (so a
    caller without one learns nothing about which paths exist), except on a public path."""
    resource = request.match_info.route.resource
    if resource is not None:
        access = _ACCESS.get((request.method, resource.canonical))
        if access is not None:
            return access
    return Access.PUBLIC if request.path in _PUBLIC_PATHS else Access.USER
