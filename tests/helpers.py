"""Test helpers: minting tokens, reading Server-Sent Events, polling for a condition."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import msgspec
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web_runner import BaseRunner
from cryptography.hazmat.primitives.asymmetric import ed25519

from auth.tokens import new_claims, sign
from common.server import ServiceRunner
from common.settings import DEFAULT_HTTP_READ_TIMEOUT

T = TypeVar("T")


@dataclass
class SseEvent:
    event: str
    data: dict[str, Any]
    id: str | None = None


async def iter_sse(response: aiohttp.ClientResponse) -> AsyncIterator[SseEvent]:
    """Yield events as they arrive; comments (heartbeats) are skipped."""
    event = "message"
    data: list[str] = []
    event_id: str | None = None
    async for raw in response.content:
        line = raw.decode("utf-8").rstrip("\r\n")
        if line == "":
            if data:
                yield SseEvent(event, json.loads("\n".join(data)), event_id)
            event, data, event_id = "message", [], None
        elif line.startswith(":"):
            continue
        elif line.startswith("id:"):
            event_id = line[3:].strip()
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())


async def read_sse(response: aiohttp.ClientResponse) -> list[SseEvent]:
    return [event async for event in iter_sse(response)]


def text_of(events: list[SseEvent]) -> str:
    return "".join(e.data["content"] for e in events if e.event == "token")


async def wait_for(
    predicate: Callable[[], Awaitable[T]],
    timeout: float = 15.0,
    interval: float = 0.05,
    *,
    what: str = "condition",
    details: Callable[[], str] | None = None,
) -> T:
    """Poll until ``predicate`` returns something truthy, and return that.

    The one polling loop of the suite. Otherwise fail the test naming ``what``, the predicate's
    last answer and ``details()`` (a server log, say). A predicate may raise to stop waiting.
    """
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        last = await predicate()
        if last:
            return last
        if loop.time() >= end:
            break
        await asyncio.sleep(interval)
    extra = f"\n{details()}" if details is not None else ""
    raise AssertionError(f"{what} not met within {timeout}s (last: {last!r}){extra}")


# One tool, as OpenAI and Ollama clients declare it: the simulator calls it when a prompt asks.
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}

ISSUER = "enterprise-chat-auth"
AUDIENCE = "enterprise-chat"


@dataclass(frozen=True)
class KeyPair:
    """A signing key for minting access tokens the way the auth service does."""

    private: ed25519.Ed25519PrivateKey
    public_pem: str
    kid: str = "test-key"

    def mint(self, user_id: str, org_id: str = "org-test", *, ttl: float = 300, **overrides: Any) -> str:
        """A token as the auth service issues it; ``overrides`` replace claims (to forge bad ones)."""
        claims = new_claims(
            issuer=ISSUER,
            audience=AUDIENCE,
            user_id=user_id,
            username=user_id,
            organization=org_id,
            role="user",
            ttl=int(ttl),
        )
        return sign(msgspec.structs.replace(claims, **overrides), self.private, self.kid)


@dataclass(frozen=True)
class RabbitManagement:
    """The test broker's management HTTP API: ``api`` URL, credentials, the broker's vhost."""

    api: str
    headers: dict[str, str]
    vhost: str


def auth_header(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def broker_user(connection: Any) -> str:
    """The RabbitMQ user of an aio-pika connection: the ``user_id`` property a request published on
    it must carry (the broker checks it; the workers trust the tests' broker user as a gateway's)."""
    return str(connection.url.user or "guest")


def simulator_url(server: Any) -> str:
    """Base URL of an in-process simulator (an aiohttp ``TestServer``)."""
    return str(server.make_url("")).rstrip("/")


@dataclass(frozen=True)
class SingleRedis:
    """A ``redis_target`` for tests whose subject does not depend on the Redis topology (override
    the fixture in the module: one Redis, not one Redis and a cluster)."""

    url: str
    cluster: bool = False


# In-process servers: a handler still running at close (a stream whose client is gone) may hold a
# server's close for aiohttp's default 60 s; tests give it a few seconds, then it is cancelled.
# Start every in-process server through these.
SERVER_SHUTDOWN_SECONDS = 3.0


class ServiceTestServer(TestServer):
    """A ``TestServer`` served the way the services are (:class:`common.server.ServiceRunner`)."""

    def __init__(self, app: web.Application, *, read_timeout: float, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.read_timeout = read_timeout

    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        return ServiceRunner(self.app, read_timeout=self.read_timeout, **kwargs)


async def start_server(
    app: web.Application, port: int | None = None, *, read_timeout: float = DEFAULT_HTTP_READ_TIMEOUT
) -> TestServer:
    server = ServiceTestServer(app, port=port, read_timeout=read_timeout)
    await server.start_server(shutdown_timeout=SERVER_SHUTDOWN_SECONDS)
    return server


async def start_client(app: web.Application) -> TestClient[web.Request, web.Application]:
    client: TestClient[web.Request, web.Application] = TestClient(await start_server(app))
    await client.start_server()
    return client
