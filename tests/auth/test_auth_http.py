"""common/http.py (JSON errors, security headers, client address) and the auth probes and metrics."""

from __future__ import annotations

import ipaddress
from typing import Any

import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from common.http import (
    SECURITY_HEADERS,
    ApiError,
    client_address,
    error_middleware,
    json_error,
    read_json,
    security_headers_middleware,
    security_headers_on_prepare,
)

Register = Any
Login = Any


class Item(msgspec.Struct, forbid_unknown_fields=True):
    name: str


def _generic_app() -> web.Application:
    app = web.Application(middlewares=[security_headers_middleware, error_middleware], client_max_size=1024)
    app.on_response_prepare.append(security_headers_on_prepare)

    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("bug")

    async def api_error(request: web.Request) -> web.Response:
        raise ApiError(429, "slow_down", "wait", headers={"Retry-After": "3"})

    async def returned_error(request: web.Request) -> web.Response:
        return json_error(418, "teapot", "short and stout")

    async def http_exc(request: web.Request) -> web.Response:
        raise web.HTTPForbidden(text="go away")

    async def echo(request: web.Request) -> web.Response:
        item = await read_json(request, Item)
        return web.json_response({"name": item.name})

    async def stream(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(b"data: 1\n\n")
        return resp

    async def json_exc(request: web.Request) -> web.Response:
        raise web.HTTPConflict(
            text='{"error": "already_there", "message": "exists"}', content_type="application/json"
        )

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound("/elsewhere")

    app.router.add_get("/boom", boom)
    app.router.add_get("/api-error", api_error)
    app.router.add_get("/returned", returned_error)
    app.router.add_get("/forbidden", http_exc)
    app.router.add_post("/echo", echo)
    app.router.add_get("/stream", stream)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/json-exc", json_exc)
    return app


def _assert_security_headers(resp: Any) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert resp.headers[name] == value, name


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/boom", 500, "internal_error"),
        ("GET", "/api-error", 429, "slow_down"),
        ("GET", "/returned", 418, "teapot"),
        ("GET", "/forbidden", 403, "forbidden"),
        ("GET", "/json-exc", 409, "already_there"),
        ("GET", "/missing", 404, "not_found"),
        ("DELETE", "/boom", 405, "method_not_allowed"),
    ],
)
async def test_errors_are_json_with_security_headers(
    aiohttp_client: Any, method: str, path: str, status: int, code: str
) -> None:
    client = await aiohttp_client(_generic_app())
    resp = await client.request(method, path)
    assert resp.status == status
    data = await resp.json()
    assert data["error"] == code and data["message"]
    _assert_security_headers(resp)
    if code == "internal_error":
        assert "bug" not in data["message"]  # no internals leak
    if code == "slow_down":
        assert resp.headers["Retry-After"] == "3"
    if code == "forbidden":
        assert data["message"] == "go away"


async def test_read_json_and_limits(aiohttp_client: Any) -> None:
    client = await aiohttp_client(_generic_app())
    ok = await client.post("/echo", json={"name": "שלום 🙂"})
    assert ok.status == 200 and (await ok.json()) == {"name": "שלום 🙂"}
    _assert_security_headers(ok)
    no_type = await client.post("/echo", data=b'{"name": "x"}', headers={"Content-Type": ""})
    assert no_type.status == 200
    too_big = await client.post("/echo", json={"name": "x" * 2048})
    assert too_big.status == 413 and (await too_big.json())["error"] == "body_too_large"
    extra = await client.post("/echo", json={"name": "x", "other": 1})
    assert extra.status == 400 and (await extra.json())["error"] == "invalid_request"


async def test_streamed_and_redirect_responses_get_headers(aiohttp_client: Any) -> None:
    client = await aiohttp_client(_generic_app())
    resp = await client.get("/stream")
    assert resp.status == 200
    _assert_security_headers(resp)
    await resp.read()
    redirect = await client.get("/redirect", allow_redirects=False)
    assert redirect.status == 302
    _assert_security_headers(redirect)


@pytest.mark.parametrize(
    ("peer", "header", "trusted", "expected"),
    [
        # No trusted proxy configured: the header is ignored, whatever it says.
        ("127.0.0.1", "198.51.100.1", "", "127.0.0.1"),
        # The peer is not a trusted proxy: it is the client, even if it sends the header.
        ("127.0.0.1", "198.51.100.1", "10.0.0.0/8", "127.0.0.1"),
        ("203.0.113.7", "198.51.100.1", "127.0.0.2", "203.0.113.7"),
        # A trusted proxy's appended entry (the right-most) is the client ...
        ("127.0.0.2", "198.51.100.1", "127.0.0.2", "198.51.100.1"),
        # ... and entries the client wrote itself (further left) are never reached.
        ("127.0.0.2", "203.0.113.5, 198.51.100.1", "127.0.0.2", "198.51.100.1"),
        # A chain of trusted proxies (CDN -> HAProxy) is walked through.
        ("10.0.0.5", "203.0.113.5, 198.51.100.1, 10.1.2.3", "10.0.0.0/8", "198.51.100.1"),
        # Garbage stops the walk at the proxy that passed it on; an absent header leaves the peer.
        ("127.0.0.2", "not-an-ip", "127.0.0.2", "127.0.0.2"),
        ("127.0.0.2", None, "127.0.0.2", "127.0.0.2"),
        ("127.0.0.2", "2001:db8::1", "127.0.0.2", "2001:db8::1"),
        ("::ffff:127.0.0.2", "::ffff:198.51.100.1", "127.0.0.2", "198.51.100.1"),
        ("::1", "198.51.100.1", "::1", "198.51.100.1"),
    ],
)
def test_client_address(peer: str, header: str | None, trusted: str, expected: str) -> None:
    headers = {"X-Forwarded-For": header} if header is not None else {}
    request = make_mocked_request("GET", "/", headers=headers)
    # make_mocked_request has no peer; stand one in.
    request = request.clone(remote=peer)
    networks = [ipaddress.ip_network(item) for item in trusted.split(",") if item]
    assert client_address(request, trusted_proxies=networks) == expected


def test_client_address_reads_every_forwarded_for_line() -> None:
    """HAProxy appends its own X-Forwarded-For line after one the client sent."""
    headers = CIMultiDict([("X-Forwarded-For", "203.0.113.5"), ("X-Forwarded-For", "198.51.100.1")])
    request = make_mocked_request("GET", "/", headers=headers).clone(remote="127.0.0.2")
    assert client_address(request, trusted_proxies=[ipaddress.ip_network("127.0.0.2")]) == "198.51.100.1"


async def test_health_ready_and_metrics(client: Any, register: Register, login: Login) -> None:
    health = await client.get("/health")
    assert health.status == 200 and (await health.json()) == {"status": "ok"}
    _assert_security_headers(health)
    ready = await client.get("/ready")
    assert ready.status == 200 and (await ready.json()) == {"status": "ready"}

    user = await register()
    await login(user["username"], user["password"])
    await client.post("/login", json={"username": user["username"], "password": "bad password"})
    await client.get("/me")
    metrics = await client.get("/metrics")
    assert metrics.status == 200
    assert metrics.headers["Content-Type"].startswith("text/plain")
    text = await metrics.text()
    assert 'auth_logins_total{result="success"} 1.0' in text
    assert 'auth_logins_total{result="invalid_credentials"} 1.0' in text
    assert 'auth_failures_total{reason="missing_token"} 1.0' in text
    assert "auth_registrations_total 1.0" in text
    assert "auth_password_hash_seconds_bucket" in text


async def test_ready_is_503_when_redis_is_down(make_client: Any) -> None:
    client = await make_client(REDIS_URL="redis://127.0.0.1:1/0")
    resp = await client.get("/ready")
    assert resp.status == 503
    assert (await resp.json())["error"] == "not_ready"
    login = await client.post("/login", json={"username": "someone", "password": "some password"})
    assert login.status == 503
    assert (await login.json())["error"] == "unavailable"
    assert login.headers["Retry-After"] == "1"
