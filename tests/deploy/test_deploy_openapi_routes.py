"""HAProxy sends every operation of the OpenAPI document to the service that serves it.

The document (gateway/openapi.json) is the public API behind one base URL; HAProxy routes the
auth paths to the auth service and everything else to the gateways. Two stand-in upstreams say
who answered, so a route the document has and HAProxy sends to the wrong place (a 404 or 401
from the wrong service in real life) fails here.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from deploy_support import HAProxyFactory, address
from helpers import start_server

from gateway.contract import OPERATIONS

# HAProxy answers these itself (readiness of the gateway pool).
ANSWERED_BY_HAPROXY = {("GET", "/ready")}


async def _stand_in(service: str) -> TestServer:
    async def ready(request: web.Request) -> web.Response:
        return web.json_response({"status": "ready"})

    async def who(request: web.Request) -> web.Response:
        return web.json_response({"service": service, "method": request.method, "path": request.path})

    app = web.Application()
    app.router.add_get("/ready", ready)
    app.router.add_route("*", "/{tail:.*}", who)
    return await start_server(app)


@pytest.fixture
async def stand_ins() -> AsyncIterator[dict[str, TestServer]]:
    servers = {service: await _stand_in(service) for service in ("auth", "gateway")}
    yield servers
    for server in servers.values():
        await server.close()


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "sample-1", path)


async def test_every_documented_operation_reaches_its_service(
    haproxy_factory: HAProxyFactory, stand_ins: dict[str, TestServer]
) -> None:
    gateway = address(stand_ins["gateway"])
    proxy = await haproxy_factory(
        GATEWAY1=gateway, GATEWAY2=gateway, GATEWAY3=gateway, AUTH_ADDR=address(stand_ins["auth"])
    )
    await proxy.wait_status({"gateways/gateway1": "UP", "auth/auth1": "UP"})
    wrong = []
    async with aiohttp.ClientSession() as session:
        for op in OPERATIONS:
            if (op.method, op.path) in ANSWERED_BY_HAPROXY:
                continue
            if op.path.startswith("/internal/"):
                # Gateways call auth's internal endpoints directly; through HAProxy they reach a
                # gateway (which asks for a token), never auth.
                async with session.request(op.method, f"{proxy.http_url}{op.path}") as response:
                    assert (await response.json()).get("service") != "auth"
                continue
            path = _concrete(op.path)
            async with session.request(op.method, f"{proxy.http_url}{path}") as response:
                body = await response.json()
            if response.status != 200 or body.get("service") != op.service:
                wrong.append(f"{op.method} {path}: {response.status} {body} (expected {op.service})")
    assert not wrong, "\n".join(wrong)
