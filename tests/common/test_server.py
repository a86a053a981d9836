"""common/server.py through common.runtime.serving, over a real TCP socket: protocol errors in the
JSON error shape, the read deadline for headers and for bodies (slowloris), no Server banner."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack

import aiohttp
import msgspec
import pytest
from aiohttp import web
from raw_http import RawResponse, exchange, free_port, post_head

from common.http import SECURITY_HEADERS, error_middleware, read_json, security_headers_middleware
from common.runtime import serving

READ_TIMEOUT = 1.0
# The answer must come within the limit plus scheduling slack, long before a trickle would end.
DEADLINE = READ_TIMEOUT + 1.5


class Item(msgspec.Struct):
    name: str


async def _echo(request: web.Request) -> web.Response:
    item = await read_json(request, Item)
    return web.json_response({"name": item.name})


async def _ignores_body(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _reads_raw(request: web.Request) -> web.Response:
    return web.json_response({"length": len(await request.read())})


async def _crashes(request: web.Request) -> web.Response:
    raise RuntimeError("secret detail")


def _app(*, middlewares: bool = True) -> web.Application:
    app = web.Application(middlewares=[security_headers_middleware, error_middleware] if middlewares else [])
    app.router.add_post("/echo", _echo)
    app.router.add_post("/ignore", _ignores_body)
    app.router.add_get("/ignore", _ignores_body)
    app.router.add_post("/raw", _reads_raw)
    app.router.add_get("/crash", _crashes)
    return app


Serve = Callable[..., Awaitable[int]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """``port = await serve(app)``: the app served as the services serve theirs."""
    async with AsyncExitStack() as stack:

        async def start(app: web.Application, read_timeout: float = READ_TIMEOUT) -> int:
            port = free_port()
            await stack.enter_async_context(
                serving(app, "127.0.0.1", port, read_timeout=read_timeout, shutdown_timeout=2)
            )
            return port

        yield start


def _assert_json_error(response: RawResponse, status: int, code: str) -> None:
    assert response.status == status, response
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"] == code
    assert response.json()["message"]
    assert "server" not in response.headers
    for name in SECURITY_HEADERS:
        assert name.lower() in response.headers
    assert response.closed


async def test_unknown_method_is_a_json_405_that_echoes_nothing(serve: Serve) -> None:
    port = await serve(_app())
    response = await exchange(port, b"FOO /chat?q=<script> HTTP/1.1\r\nHost: x\r\n\r\n")
    _assert_json_error(response, 405, "method_not_allowed")
    assert b"FOO" not in response.body and b"script" not in response.body


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(
            b"GET /ignore HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n", id="big-header"
        ),
        pytest.param(b"GET /ignore HTTP/1.1\r\nHost: x\r\nBad Name: <b>\r\n\r\n", id="bad-header-name"),
        pytest.param(
            b"POST /raw HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
            id="double-length",
        ),
        pytest.param(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n", id="tls-on-plain-port"),
    ],
)
async def test_requests_the_parser_rejects_get_a_json_error(serve: Serve, raw: bytes) -> None:
    port = await serve(_app())
    response = await exchange(port, raw)
    assert response.status in {400, 405}
    _assert_json_error(
        response, response.status, "bad_request" if response.status == 400 else "method_not_allowed"
    )
    assert b"<b>" not in response.body and b"aaaa" not in response.body


async def test_headers_sent_a_byte_at_a_time_get_408_within_the_read_timeout(serve: Serve) -> None:
    port = await serve(_app())
    # An inactivity timer never fires on this: a byte every 0.3 s, 60 bytes of headers.
    response = await exchange(
        port, b"GET /ignore HTTP/1.1\r\n", trickle=b"X-Slow: " + b"a" * 50 + b"\r\n\r\n"
    )
    _assert_json_error(response, 408, "request_timeout")
    assert response.elapsed < DEADLINE
    assert not response.sent_all


async def test_a_connection_that_sends_nothing_is_closed_after_the_read_timeout(serve: Serve) -> None:
    port = await serve(_app())
    response = await exchange(port, b"")
    _assert_json_error(response, 408, "request_timeout")
    assert response.elapsed < DEADLINE


async def test_a_body_sent_a_byte_at_a_time_gets_408_within_the_read_timeout(serve: Serve) -> None:
    port = await serve(_app())
    body = b'{"name": "' + b"a" * 40 + b'"}'
    response = await exchange(port, post_head("/echo", len(body)), trickle=body)
    _assert_json_error(response, 408, "request_timeout")
    assert response.elapsed < DEADLINE
    assert not response.sent_all


async def test_a_slow_body_nobody_reads_does_not_hold_the_connection(serve: Serve) -> None:
    port = await serve(_app())
    body = b"x" * 40
    response = await exchange(port, post_head("/ignore", len(body)), trickle=body, close_wait=DEADLINE)
    assert response.status == 200  # answered at once; the rest of the body is not waited for
    assert response.closed
    assert not response.sent_all


async def test_a_body_timeout_past_a_handler_without_error_middleware_is_408_not_504(serve: Serve) -> None:
    port = await serve(_app(middlewares=False))
    body = b"x" * 40
    response = await exchange(port, post_head("/raw", len(body)), trickle=body)
    _assert_json_error(response, 408, "request_timeout")


async def test_a_crash_past_a_handler_without_error_middleware_is_a_json_500(serve: Serve) -> None:
    port = await serve(_app(middlewares=False))
    response = await exchange(port, b"GET /crash HTTP/1.1\r\nHost: x\r\n\r\n")
    _assert_json_error(response, 500, "internal_error")
    assert b"secret" not in response.body


async def test_idle_keep_alive_between_requests_is_not_a_read_timeout(serve: Serve) -> None:
    port = await serve(_app())
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{port}/echo"
        async with session.post(url, json={"name": "one"}) as response:
            assert response.status == 200
            assert "Server" not in response.headers
        await asyncio.sleep(READ_TIMEOUT * 1.5)  # idle on the kept-alive connection
        async with session.post(url, json={"name": "two"}) as response:
            assert response.status == 200
            assert await response.json() == {"name": "two"}


async def test_no_response_carries_the_server_banner(serve: Serve) -> None:
    port = await serve(_app())
    async with aiohttp.ClientSession() as session:
        for method, path in [("GET", "/ignore"), ("GET", "/nope"), ("PUT", "/ignore"), ("GET", "/crash")]:
            async with session.request(method, f"http://127.0.0.1:{port}{path}") as response:
                assert "Server" not in response.headers, (method, path, response.headers)
