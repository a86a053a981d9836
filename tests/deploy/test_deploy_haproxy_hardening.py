"""HAProxy as shipped, with real requests: paths are normalised before routing (no /metrics in any
spelling), its own errors use the API's JSON shape, a slow client is cut off by
``timeout http-request`` (headers and body), and parser errors of the services behind it are JSON.

HAProxy 2.6 answers requests its HTTP/1 parser rejects (oversized or malformed headers) and headers
that arrive late with built-in HTML pages that no configuration can replace (haproxy/haproxy#3032,
fixed in 3.3 for `errorfile`s); those tests check the status, the close and that nothing is echoed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from deploy_support import HAProxy, HAProxyFactory, address, free_port
from helpers import SingleRedis, start_server
from raw_http import RawResponse, exchange, post_head

from auth.app import create_app as create_auth_app
from auth.settings import AuthSettings

SLOW_HEADERS_LIMIT = "1s"


@pytest.fixture(scope="session")
def redis_target(single_redis_url: str) -> SingleRedis:
    """The proxy's behaviour does not depend on the Redis topology: one Redis is enough here."""
    return SingleRedis(single_redis_url)


@dataclass
class Upstream:
    server: TestServer
    seen: list[str]  # "METHOD raw-path" of every request but health checks


@pytest.fixture
async def upstream_log() -> AsyncIterator[Upstream]:
    """A stand-in service: ``/ready`` is 200, ``/slow`` answers after 5 s, anything else echoes
    the path it received; it records what reached it."""
    seen: list[str] = []

    async def ready(request: web.Request) -> web.Response:
        return web.json_response({"status": "ready"})

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.json_response({"late": True})

    async def echo(request: web.Request) -> web.Response:
        seen.append(f"{request.method} {request.raw_path}")
        await request.read()
        return web.json_response({"path": request.path, "raw_path": request.raw_path})

    app = web.Application()
    app.router.add_get("/ready", ready)
    app.router.add_get("/slow", slow)
    app.router.add_route("*", "/{tail:.*}", echo)
    server = await start_server(app)
    yield Upstream(server, seen)
    await server.close()


async def _front(haproxy_factory: HAProxyFactory, upstream: Upstream, **env: str) -> HAProxy:
    """HAProxy with the stand-in as every gateway and as the auth service, once both are up."""
    where = address(upstream.server)
    proxy = await haproxy_factory(GATEWAY1=where, GATEWAY2=where, GATEWAY3=where, AUTH_ADDR=where, **env)
    await proxy.wait_status({"gateways/gateway1": "UP", "auth/auth1": "UP"})
    return proxy


def _port(proxy: HAProxy) -> int:
    return int(proxy.env["HTTP_PORT"])


def _get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode()


def _assert_json(response: RawResponse, status: int, code: str) -> None:
    assert response.status == status, response
    assert response.headers["content-type"] == "application/json", response.headers
    assert response.json()["error"] == code


METRICS_SPELLINGS = [
    "/metrics",
    "/%6detrics",
    "/%6D%65%74rics",
    "//metrics",
    "/metrics/",
    "/METRICS",
    "/Metrics",
    "/./metrics",
    "/x/../metrics",
    "/x/%2e%2e/metrics",
    "/metrics?format=text",
]


async def test_metrics_are_not_served_through_the_front_in_any_spelling(
    haproxy_factory: HAProxyFactory, upstream_log: Upstream
) -> None:
    auth_port = free_port()
    proxy = await _front(haproxy_factory, upstream_log, AUTH_FRONT_PORT=str(auth_port))
    for port in (_port(proxy), auth_port):
        for path in METRICS_SPELLINGS:
            response = await exchange(port, _get(path))
            assert response.status == 404, (port, path, response)
            assert response.json() == {"error": "not_found", "message": "not found"}
    assert upstream_log.seen == []


async def test_paths_are_normalised_before_routing(
    haproxy_factory: HAProxyFactory, upstream_log: Upstream
) -> None:
    gateway = await start_server(web.Application())  # answers 404 to everything: not auth
    try:
        proxy = await haproxy_factory(
            GATEWAY1=address(gateway),
            GATEWAY2=address(gateway),
            GATEWAY3=address(gateway),
            AUTH_ADDR=address(upstream_log.server),
        )
        await proxy.wait_status({"auth/auth1": "UP"})
        # "%6c" is "l": the auth service would see /login, so HAProxy must route it there.
        response = await exchange(
            _port(proxy), b"POST /%6cogin HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
        )
        assert response.status == 200, response
        assert response.json()["raw_path"] == "/login"
        response = await exchange(_port(proxy), _get("/admin//users/./x/../"))
        assert response.json()["raw_path"] == "/admin/users/"
    finally:
        await gateway.close()


async def test_an_invalid_percent_escape_is_a_json_400(
    haproxy_factory: HAProxyFactory, upstream_log: Upstream
) -> None:
    proxy = await _front(haproxy_factory, upstream_log)
    for path in ("/%zz", "/chat%", "/%%36%36"):
        _assert_json(await exchange(_port(proxy), _get(path)), 400, "bad_request")
    assert upstream_log.seen == []


async def test_no_server_is_a_json_503(haproxy_factory: HAProxyFactory) -> None:
    proxy = await haproxy_factory()  # every upstream on a closed port
    await proxy.wait_status({"gateways/gateway1": "DOWN", "auth/auth1": "DOWN"})
    for path in ("/chat", "/login"):
        response = await exchange(_port(proxy), _get(path))
        _assert_json(response, 503, "unavailable")
        assert response.headers["retry-after"] == "1"


async def test_an_upstream_that_does_not_answer_in_time_is_a_json_504(
    haproxy_factory: HAProxyFactory, upstream_log: Upstream
) -> None:
    proxy = await _front(haproxy_factory, upstream_log, TIMEOUT_SERVER="1s")
    _assert_json(await exchange(_port(proxy), _get("/slow")), 504, "gateway_timeout")


async def test_an_upstream_answering_garbage_is_a_json_502(haproxy_factory: HAProxyFactory) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            head = await reader.readuntil(b"\r\n\r\n")
            if head.startswith(b"GET /ready "):  # healthy to the checks, broken to requests
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            else:
                writer.write(b"this is not HTTP\r\n\r\n")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    where = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        proxy = await haproxy_factory(GATEWAY1=where, GATEWAY2=where, GATEWAY3=where)
        await proxy.wait_status({"gateways/gateway1": "UP"})
        _assert_json(await exchange(_port(proxy), _get("/chat")), 502, "bad_gateway")
    finally:
        server.close()
        await server.wait_closed()


async def test_a_body_sent_a_byte_at_a_time_gets_a_json_408_and_never_reaches_a_server(
    haproxy_factory: HAProxyFactory, upstream_log: Upstream
) -> None:
    proxy = await _front(haproxy_factory, upstream_log, TIMEOUT_HTTP_REQUEST=SLOW_HEADERS_LIMIT)
    body = b'{"session_id": "s", "prompt": "' + b"a" * 40 + b'"}'
    response = await exchange(_port(proxy), post_head("/chat", len(body)), trickle=body, interval=0.3)
    _assert_json(response, 408, "request_timeout")
    assert response.elapsed < 2.5
    assert not response.sent_all
    assert response.closed
    assert upstream_log.seen == []  # buffered at the proxy: no gateway was tied up


async def test_a_body_arriving_in_pieces_within_the_limit_is_forwarded_once(
    haproxy_factory: HAProxyFactory, upstream_log: Upstream
) -> None:
    proxy = await _front(haproxy_factory, upstream_log, TIMEOUT_HTTP_REQUEST=SLOW_HEADERS_LIMIT)
    body = b'{"hello": "world"}'
    response = await exchange(
        _port(proxy),
        post_head("/chat", len(body), extra="Connection: close\r\n"),
        trickle=body,
        interval=0.02,
    )
    assert response.status == 200, response
    assert response.sent_all
    assert upstream_log.seen == ["POST /chat"]


async def test_headers_sent_a_byte_at_a_time_are_cut_off(
    haproxy_factory: HAProxyFactory, upstream_log: Upstream
) -> None:
    proxy = await _front(haproxy_factory, upstream_log, TIMEOUT_HTTP_REQUEST=SLOW_HEADERS_LIMIT)
    response = await exchange(
        _port(proxy), b"GET /chat HTTP/1.1\r\n", trickle=b"X-Slow: " + b"a" * 40 + b"\r\n\r\n"
    )
    assert response.status == 408  # HAProxy 2.6: its built-in page (see the module docstring)
    assert response.elapsed < 2.5
    assert response.closed
    assert upstream_log.seen == []


async def test_oversized_headers_are_refused_without_echo(
    haproxy_factory: HAProxyFactory, upstream_log: Upstream
) -> None:
    proxy = await _front(haproxy_factory, upstream_log)
    marker = b"<script>" + b"a" * 20_000
    response = await exchange(
        _port(proxy), b"GET /chat HTTP/1.1\r\nHost: x\r\nX-Big: " + marker + b"\r\n\r\n"
    )
    assert response.status == 400  # HAProxy 2.6 has no 431; its built-in page (module docstring)
    assert b"<script>" not in response.body
    assert response.closed
    assert upstream_log.seen == []


@pytest.fixture
async def auth_service(auth_base_env: dict[str, str]) -> AsyncIterator[TestServer]:
    settings = AuthSettings.from_env({**auth_base_env, "AUTH_BCRYPT_ROUNDS": "4", "AUTH_HASH_WORKERS": "2"})
    server = await start_server(create_auth_app(settings))
    yield server
    await server.close()


async def test_an_unknown_method_gets_the_services_json_error_through_haproxy(
    haproxy_factory: HAProxyFactory, gateway_factory: Any, auth_service: TestServer
) -> None:
    """HAProxy passes any well-formed method on; the gateways and auth answer it as JSON."""
    gateway = await gateway_factory()
    where = address(gateway)
    proxy = await haproxy_factory(
        GATEWAY1=where, GATEWAY2=where, GATEWAY3=where, AUTH_ADDR=address(auth_service)
    )
    await proxy.wait_status({"gateways/gateway1": "UP", "auth/auth1": "UP"})
    for path in ("/chat", "/login"):
        response = await exchange(_port(proxy), f"FOO {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        _assert_json(response, 405, "method_not_allowed")
        assert b"FOO" not in response.body
        assert "server" not in response.headers
    # A method that is not even a token is refused by HAProxy itself.
    response = await exchange(_port(proxy), b"G@T /chat HTTP/1.1\r\nHost: x\r\n\r\n")
    assert response.status == 400
    assert b"G@T" not in response.body
