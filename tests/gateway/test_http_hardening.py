"""A gateway served as in production (common.server), reached directly over TCP: bad bytes in a
body are 400 on every endpoint, parser errors are JSON, a slow client gets 408 within the read
timeout, authenticated answers are never cacheable, and no response names the server software."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from helpers import KeyPair, SingleRedis, auth_header, read_sse, start_server
from raw_http import exchange, post_head

from gateway.app import create_app
from gateway.settings import GatewaySettings

READ_TIMEOUT = "1"


@pytest.fixture(scope="session")
def redis_target(single_redis_url: str) -> SingleRedis:
    """HTTP handling does not depend on the Redis topology: one Redis is enough here."""
    return SingleRedis(single_redis_url)


@pytest.fixture
async def gateway_server(gateway_env: dict[str, str], amqp: Any, redis: Any) -> AsyncIterator[TestServer]:
    """One gateway with a 1 s read timeout, wired from its settings as ``python -m gateway`` is."""
    settings = GatewaySettings.from_env({**gateway_env, "HTTP_READ_TIMEOUT_SECONDS": READ_TIMEOUT})
    server = await start_server(create_app(settings), read_timeout=settings.common.http_read_timeout)
    yield server
    await server.close()


def _url(server: TestServer, path: str) -> str:
    return str(server.make_url(path))


def _error_code(body: dict[str, Any]) -> str:
    """Our shape, or OpenAI's under /v1."""
    error = body["error"]
    return str(error["code"] if isinstance(error, dict) else error)


DEEP = b"[" * 1_000 + b"]" * 1_000


@pytest.mark.parametrize(
    ("path", "body", "code"),
    [
        ("/chat", b'{"session_id": "\xe2\x82", "prompt": "hi"}', "malformed_json"),
        ("/chat", b'{"session_id": "s", "prompt": "\xff\xfe"}', "malformed_json"),
        ("/jobs", b'{"prompt": "\xc3\x28"}', "malformed_json"),
        (
            "/v1/chat/completions",
            b'{"model": "m", "messages": [{"role": "user", "content": "\xed\xa0"}]}',
            "malformed_json",
        ),
        # A field the body type does not know is skipped, recursively: 1,000 levels exhaust it.
        (
            "/v1/chat/completions",
            b'{"model": "m", "messages": [], "metadata": ' + DEEP + b"}",
            "malformed_json",
        ),
        # Where the type is known, the first level of nesting already fails validation.
        ("/v1/chat/completions", b'{"model": "m", "messages": ' + DEEP + b"}", "invalid_request"),
        ("/jobs", b'{"messages": ' + DEEP + b"}", "invalid_request"),
    ],
    ids=[
        "chat-utf8",
        "chat-utf8-prompt",
        "jobs-utf8",
        "v1-utf8",
        "v1-deep-unknown-field",
        "v1-deep",
        "jobs-deep",
    ],
)
async def test_bad_bytes_in_a_body_are_400(
    gateway_server: TestServer, keys: KeyPair, path: str, body: bytes, code: str
) -> None:
    headers = {**auth_header(keys.mint("bytes")), "Content-Type": "application/json"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(_url(gateway_server, path), data=body, headers=headers) as response,
    ):
        assert response.status == 400, await response.text()
        assert _error_code(await response.json()) == code


async def test_an_unknown_method_is_a_json_405(gateway_server: TestServer) -> None:
    response = await exchange(gateway_server.port, b"FOO /chat HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert response.status == 405
    assert response.json()["error"] == "method_not_allowed"
    assert b"FOO" not in response.body
    assert response.closed


async def test_a_body_sent_a_byte_a_second_gets_408_within_the_read_timeout(
    gateway_server: TestServer, keys: KeyPair
) -> None:
    body = b'{"session_id": "slow", "prompt": "' + b"a" * 30 + b'"}'
    head = post_head("/chat", len(body), extra=f"Authorization: Bearer {keys.mint('slow')}\r\n")
    response = await exchange(gateway_server.port, head, trickle=body, interval=0.3)
    assert response.status == 408
    assert response.json() == {
        "error": "request_timeout",
        "message": "the request body was not received within 1 s",
    }
    assert response.elapsed < 2.5
    assert not response.sent_all
    assert response.closed


async def test_slow_headers_get_408_within_the_read_timeout(gateway_server: TestServer) -> None:
    response = await exchange(
        gateway_server.port, b"GET /sessions HTTP/1.1\r\n", trickle=b"Authorization: x" * 4
    )
    assert response.status == 408
    assert response.json()["error"] == "request_timeout"
    assert response.elapsed < 2.5
    assert response.closed


async def test_authenticated_answers_are_no_store_and_nothing_names_the_server(
    gateway_server: TestServer, worker: Any, keys: KeyPair
) -> None:
    headers = auth_header(keys.mint("cache"))
    async with aiohttp.ClientSession() as session:
        async with session.post(
            _url(gateway_server, "/chat"), json={"session_id": "c1", "prompt": "hi"}, headers=headers
        ) as response:
            assert response.status == 200
            assert "no-store" in response.headers["Cache-Control"]
            assert "Server" not in response.headers
            await read_sse(response)
        for method, path, status in [
            ("POST", "/chat", 200),  # stream: false below
            ("GET", "/sessions", 200),
            ("GET", "/sessions/c1", 200),
            ("GET", "/sessions/nope", 404),
            ("GET", "/jobs/nope", 404),
            ("GET", "/v1/models", 200),
            ("GET", "/sessions", 401),  # without a token: still not cacheable
        ]:
            kwargs: dict[str, Any] = {"headers": headers if status != 401 else {}}
            if method == "POST":
                kwargs["json"] = {"session_id": "c1", "prompt": "again", "stream": False}
            async with session.request(method, _url(gateway_server, path), **kwargs) as response:
                assert response.status == status, (path, await response.text())
                assert response.headers["Cache-Control"] == "no-store", (path, response.headers)
                assert "Server" not in response.headers, path
        async with session.get(_url(gateway_server, "/health")) as response:
            assert "Server" not in response.headers
