"""Typed keys for the gateway app's resources (set by ``create_app`` and its ``cleanup_ctx``
entries, one per resource) and for what middlewares leave on each request."""

from __future__ import annotations

from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection
from aiohttp import ClientSession, web

from common.archive import ArchiveStore
from common.exchanges import ChatRecords
from common.jobs import JobStore
from common.keyspace import Keyspace
from common.redis import RedisClient
from common.session_reader import SessionReader
from common.sessions import SessionStore
from gateway.admission import Admission, Verdict
from gateway.backlog import QueueBacklog
from gateway.lifecycle import Lifecycle
from gateway.metrics import GatewayMetrics
from gateway.models import ModelCatalog
from gateway.publisher import RequestPublisher
from gateway.quota import QuotaWatch
from gateway.replies import ReplyRouter
from gateway.settings import GatewaySettings
from gateway.tokens import Principal, TokenVerifier

__all__ = [
    "ADMISSION",
    "AMQP",
    "ARCHIVE",
    "BACKLOG",
    "BROKER_CHANNELS",
    "EVENTS",
    "HTTP",
    "JOBS",
    "KEYS",
    "LIFECYCLE",
    "METRICS",
    "MODELS",
    "PRINCIPAL",
    "PUBLISHER",
    "QUOTA",
    "READER",
    "RECORDS",
    "REDIS",
    "REQUEST_ID",
    "ROUTER",
    "SESSIONS",
    "SETTINGS",
    "TRACE_ID",
    "VERDICT",
    "VERIFIER",
    "principal_of",
    "request_id_of",
    "trace_id_of",
]

# -- the app: configuration and process-wide objects (create_app) -----------------------------------
SETTINGS = web.AppKey("settings", GatewaySettings)
METRICS = web.AppKey("metrics", GatewayMetrics)
KEYS = web.AppKey("keyspace", Keyspace)
LIFECYCLE = web.AppKey("lifecycle", Lifecycle)

# -- the app: resources, each opened and closed by its own cleanup_ctx entry (gateway/app.py) ------
REDIS: web.AppKey[RedisClient] = web.AppKey("redis")
SESSIONS = web.AppKey("sessions", SessionStore)
RECORDS = web.AppKey("records", ChatRecords)
JOBS = web.AppKey("jobs", JobStore)
ADMISSION = web.AppKey("admission", Admission)
QUOTA = web.AppKey("quota", QuotaWatch)
MODELS = web.AppKey("models", ModelCatalog)
HTTP = web.AppKey("http", ClientSession)
VERIFIER = web.AppKey("verifier", TokenVerifier)
BACKLOG = web.AppKey("backlog", QueueBacklog)  # absent without a management API
ARCHIVE = web.AppKey("archive", ArchiveStore)
READER = web.AppKey("reader", SessionReader)
AMQP = web.AppKey("amqp", AbstractRobustConnection)
# The channels this instance cannot serve without (request publisher, reply queue): /ready checks them.
BROKER_CHANNELS: web.AppKey[list[AbstractChannel]] = web.AppKey("broker_channels")
PUBLISHER = web.AppKey("publisher", RequestPublisher)
EVENTS = web.AppKey("events", AbstractExchange)
ROUTER = web.AppKey("router", ReplyRouter)

# -- one request (set by the middlewares) ----------------------------------------------------------
PRINCIPAL = web.RequestKey("principal", Principal)
REQUEST_ID = web.RequestKey("request_id", str)
TRACE_ID = web.RequestKey("trace_id", str)
VERDICT = web.RequestKey("rate_limit_verdict", Verdict)


def principal_of(request: web.Request) -> Principal:
    """The verified caller (set by the authentication middleware)."""
    return request[PRINCIPAL]


def request_id_of(request: web.Request) -> str:
    """This request's server-generated id: the correlation id, job id and cancel target."""
    return request[REQUEST_ID]


def trace_id_of(request: web.Request) -> str:
    """The caller's ``X-Request-ID`` (or the request id): for logs and message headers only."""
    return request[TRACE_ID]
