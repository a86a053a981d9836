"""The auth service served as in production (common.server), reached directly over TCP: bad bytes in
a body are 400, parser errors are JSON, a slow client gets 408 within the read timeout, nothing it
answers on an account route is cacheable, and no response names the server software."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from helpers import SingleRedis, start_server
from raw_http import exchange, post_head

from auth.app import create_app
from auth.settings import AuthSettings


@pytest.fixture(scope="session")
def redis_target(single_redis_url: str) -> SingleRedis:
    """HTTP handling does not depend on the Redis topology: one Redis is enough here."""
    return SingleRedis(single_redis_url)


@pytest.fixture
async def auth_server(make_settings: Callable[..., AuthSettings]) -> AsyncIterator[TestServer]:
    """The auth app with a 1 s read timeout, wired from its settings as ``python -m auth`` is."""
    settings = make_settings(HTTP_READ_TIMEOUT_SECONDS="1")
    server = await start_server(create_app(settings), read_timeout=settings.common.http_read_timeout)
    yield server
    await server.close()


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/refresh", b'{"refresh_token": "\xff"}'),
        ("/login", b'{"username": "\xe2\x82", "password": "x"}'),
        ("/register", b'{"username": "u", "password": "\xc3\x28", "email": "a@b.c", "organization": "o"}'),
        ("/login", b'{"username": "u", "password": "p", "extra": ' + b"[" * 1_000 + b"]" * 1_000 + b"}"),
    ],
    ids=["refresh-utf8", "login-utf8", "register-utf8", "login-deep"],
)
async def test_bad_bytes_in_a_body_are_400(auth_server: TestServer, path: str, body: bytes) -> None:
    url = str(auth_server.make_url(path))
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession() as session, session.post(url, data=body, headers=headers) as response:
        assert response.status == 400, await response.text()
        assert (await response.json())["error"] in {"malformed_json", "invalid_request"}
        assert response.headers["Cache-Control"] == "no-store"


async def test_invalid_utf8_is_malformed_json(auth_server: TestServer) -> None:
    url = str(auth_server.make_url("/refresh"))
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=b'{"refresh_token": "\xff"}') as response,
    ):
        assert response.status == 400
        assert await response.json() == {
            "error": "malformed_json",
            "message": "request body is not valid UTF-8",
        }


async def test_an_unknown_method_is_a_json_405(auth_server: TestServer) -> None:
    response = await exchange(auth_server.port, b"FOO /login HTTP/1.1\r\nHost: auth\r\n\r\n")
    assert response.status == 405
    assert response.json()["error"] == "method_not_allowed"
    assert b"FOO" not in response.body
    assert "server" not in response.headers


async def test_a_login_body_sent_a_byte_at_a_time_gets_408_within_the_read_timeout(
    auth_server: TestServer,
) -> None:
    body = b'{"username": "slowpoke", "password": "' + b"p" * 30 + b'"}'
    response = await exchange(auth_server.port, post_head("/login", len(body)), trickle=body, interval=0.3)
    assert response.status == 408
    assert response.json()["error"] == "request_timeout"
    assert response.elapsed < 2.5
    assert not response.sent_all
    assert response.closed


async def test_account_answers_are_no_store_and_nothing_names_the_server(auth_server: TestServer) -> None:
    async with aiohttp.ClientSession() as session:
        for method, path, status in [
            ("GET", "/me", 401),
            ("POST", "/refresh", 401),
            ("GET", "/admin/users", 401),
            ("GET", "/nope", 404),
        ]:
            kwargs: dict[str, Any] = {"json": {"refresh_token": "x" * 40}} if method == "POST" else {}
            async with session.request(method, str(auth_server.make_url(path)), **kwargs) as response:
                assert response.status == status, (path, await response.text())
                assert response.headers["Cache-Control"] == "no-store", path
                assert "Server" not in response.headers, path
        async with session.get(str(auth_server.make_url("/.well-known/jwks.json"))) as response:
            assert response.status == 200
            assert response.headers["Cache-Control"] == "public, max-age=300"  # public keys may be cached
            assert "Server" not in response.headers
