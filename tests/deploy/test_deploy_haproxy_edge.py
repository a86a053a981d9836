"""HAProxy's own behaviour at the edge, with a stand-in upstream: request ids, forwarding headers,
security headers, TLS, the flood limit, the HTTPS redirect, readiness, stats and metrics."""

from __future__ import annotations

import re
import uuid

import aiohttp
from aiohttp.test_utils import TestServer
from deploy_support import HAProxy, HAProxyFactory, Tls, address, basic_auth, client_tls, free_port

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
SECURITY_HEADERS = {
    "Strict-Transport-Security": "max-age=63072000; includeSubDomains",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


async def _all_gateways(haproxy_factory: HAProxyFactory, upstream: TestServer, **env: str) -> HAProxy:
    """HAProxy with the stand-in upstream as all three gateways, once it is up."""
    proxy = await haproxy_factory(
        GATEWAY1=address(upstream), GATEWAY2=address(upstream), GATEWAY3=address(upstream), **env
    )
    await proxy.wait_status({"gateways/gateway1": "UP"})
    return proxy


async def test_request_id_is_added_when_absent_and_kept_when_present(
    haproxy_factory: HAProxyFactory, upstream: TestServer
) -> None:
    proxy = await _all_gateways(haproxy_factory, upstream)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{proxy.http_url}/anything") as response:
            assert response.status == 200
            seen = (await response.json())["headers"]
            assert UUID.match(seen["X-Request-ID"])
            assert response.headers["X-Request-ID"] == seen["X-Request-ID"]

        mine = f"client-{uuid.uuid4().hex}"
        async with session.get(f"{proxy.http_url}/anything", headers={"X-Request-ID": mine}) as response:
            assert (await response.json())["headers"]["X-Request-ID"] == mine
            assert response.headers["X-Request-ID"] == mine

        # A malformed id (here: a header-injection attempt's leftovers) is replaced, not forwarded.
        bad = {"X-Request-ID": "bad id <script>"}
        async with session.get(f"{proxy.http_url}/x", headers=bad) as response:
            assert UUID.match((await response.json())["headers"]["X-Request-ID"])


async def test_forwarding_and_security_headers(haproxy_factory: HAProxyFactory, upstream: TestServer) -> None:
    proxy = await _all_gateways(haproxy_factory, upstream)
    async with aiohttp.ClientSession() as session, session.get(f"{proxy.http_url}/anything") as response:
        seen = (await response.json())["headers"]
        assert seen["X-Forwarded-For"] == "127.0.0.1"
        assert seen["X-Forwarded-Proto"] == "http"
        for name, value in SECURITY_HEADERS.items():
            assert response.headers[name] == value
        assert "Server" not in response.headers  # the upstream's version string is not leaked


async def test_tls_endpoint_serves_the_certificate_with_security_headers(
    haproxy_factory: HAProxyFactory, upstream: TestServer, tls: Tls
) -> None:
    proxy = await _all_gateways(haproxy_factory, upstream)
    url = f"{proxy.https_url}/anything"
    async with aiohttp.ClientSession() as session, session.get(url, ssl=client_tls(tls.ca_file)) as response:
        assert response.status == 200
        assert (await response.json())["headers"]["X-Forwarded-Proto"] == "https"
        for name, value in SECURITY_HEADERS.items():
            assert response.headers[name] == value


async def test_flood_limit_answers_429_per_ip(haproxy_factory: HAProxyFactory, upstream: TestServer) -> None:
    proxy = await _all_gateways(haproxy_factory, upstream, IP_REQUESTS_PER_10S="5")
    statuses = []
    async with aiohttp.ClientSession() as session:
        for _ in range(12):
            async with session.get(f"{proxy.http_url}/anything") as response:
                statuses.append(response.status)
                if response.status == 429:
                    body = await response.json()
                    assert body["error"] == "rate_limited"
                    assert response.headers["Retry-After"] == "10"
                    assert response.headers["X-Frame-Options"] == "DENY"
    assert statuses[:5] == [200] * 5
    assert statuses[-1] == 429


async def test_http_redirects_to_https_when_enabled(
    haproxy_factory: HAProxyFactory, upstream: TestServer
) -> None:
    proxy = await _all_gateways(haproxy_factory, upstream, HTTPS_REDIRECT="1")
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{proxy.http_url}/chat?x=1", allow_redirects=False) as response:
            assert response.status == 301
            port = proxy.env["HTTPS_PORT"]
            assert response.headers["Location"] == f"https://127.0.0.1:{port}/chat?x=1"
        # Probes keep working over plain HTTP.
        async with session.get(f"{proxy.http_url}/ready", allow_redirects=False) as response:
            assert response.status == 200


async def test_ready_follows_the_gateways(haproxy_factory: HAProxyFactory, upstream: TestServer) -> None:
    proxy = await haproxy_factory()  # every gateway on a closed port
    async with aiohttp.ClientSession() as session:
        await proxy.wait_status({f"gateways/gateway{i}": "DOWN" for i in (1, 2, 3)})
        async with session.get(f"{proxy.http_url}/ready") as response:
            assert response.status == 503
            assert (await response.json())["error"] == "not_ready"
        # No server at all: HAProxy's own 503 keeps the API's error shape.
        async with session.get(f"{proxy.http_url}/chat") as response:
            assert response.status == 503
            assert (await response.json())["error"] == "unavailable"
            assert response.headers["Retry-After"] == "1"

    proxy = await _all_gateways(haproxy_factory, upstream)
    async with aiohttp.ClientSession() as session, session.get(f"{proxy.http_url}/ready") as response:
        assert response.status == 200
        assert (await response.json())["status"] == "ready"


async def test_metrics_are_not_public_but_stats_port_serves_them(
    haproxy_factory: HAProxyFactory, upstream: TestServer
) -> None:
    proxy = await _all_gateways(haproxy_factory, upstream)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{proxy.http_url}/metrics") as response:
            assert response.status == 404
        async with session.get(f"{proxy.stats_url}/stats") as response:
            assert response.status == 200
            assert "gateways" in await response.text()
        async with session.get(f"{proxy.stats_url}/metrics") as response:
            assert response.status == 200
            text = await response.text()
            assert 'haproxy_backend_active_servers{proxy="gateways"}' in text


async def test_stats_page_needs_login_when_a_password_is_set(
    haproxy_factory: HAProxyFactory, upstream: TestServer
) -> None:
    password = uuid.uuid4().hex
    proxy = await _all_gateways(haproxy_factory, upstream, STATS_PASSWORD=password)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{proxy.stats_url}/stats") as response:
            assert response.status == 401
        login = basic_auth("admin", password)
        async with session.get(f"{proxy.stats_url}/stats", headers=login) as response:
            assert response.status == 200


async def test_auth_front_port_sends_everything_to_auth(
    haproxy_factory: HAProxyFactory, upstream: TestServer
) -> None:
    port = str(free_port())
    proxy = await haproxy_factory(AUTH_ADDR=address(upstream), AUTH_FRONT_PORT=port)
    await proxy.wait_status({"auth/auth1": "UP"})
    url = f"http://127.0.0.1:{port}/login"
    async with aiohttp.ClientSession() as session, session.post(url, json={}) as response:
        assert response.status == 200
        seen = await response.json()
    assert seen["path"] == "/login"
    assert seen["headers"]["X-Forwarded-For"] == "127.0.0.1"
    assert UUID.match(seen["headers"]["X-Request-ID"])
