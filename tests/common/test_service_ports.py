"""The small HTTP ports (the worker's and archiver's health app, the Ollama simulator) served as
their ``__main__`` serves them: no Server banner, errors and parser errors in the JSON shape."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry
from raw_http import exchange, free_port

from common.health import create_health_app
from common.runtime import serving
from inference_worker.simulator import create_simulator_app


async def _ready() -> bool:
    return True


@pytest.fixture(params=["health", "simulator"])
async def port(request: pytest.FixtureRequest) -> AsyncIterator[int]:
    app: web.Application = (
        create_health_app(ready=_ready, registry=CollectorRegistry())
        if request.param == "health"
        else create_simulator_app()
    )
    port = free_port()
    async with serving(app, "127.0.0.1", port, read_timeout=1, shutdown_timeout=2):
        yield port


async def test_no_answer_names_the_server_software(port: int) -> None:
    async with aiohttp.ClientSession() as session:
        for path in ("/metrics", "/nope"):
            async with session.get(f"http://127.0.0.1:{port}{path}") as response:
                assert "Server" not in response.headers, (path, response.headers)
    response = await exchange(port, b"FOO / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert "server" not in response.headers


async def test_parser_errors_are_json(port: int) -> None:
    response = await exchange(port, b"FOO /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert response.status == 405
    assert response.json()["error"] == "method_not_allowed"
    response = await exchange(port, b"GET /metrics HTTP/1.1\r\nBad Header: x\r\n\r\n")
    assert response.status == 400
    assert response.json()["error"] == "bad_request"


async def test_health_app_errors_are_json() -> None:
    port = free_port()
    app = create_health_app(ready=_ready, registry=CollectorRegistry())
    async with (
        serving(app, "127.0.0.1", port, shutdown_timeout=2),
        aiohttp.ClientSession() as session,
    ):
        async with session.get(f"http://127.0.0.1:{port}/nope") as response:
            assert response.status == 404
            assert (await response.json())["error"] == "not_found"
            assert response.headers["X-Content-Type-Options"] == "nosniff"
        async with session.post(f"http://127.0.0.1:{port}/health") as response:
            assert response.status == 405
            assert (await response.json())["error"] == "method_not_allowed"
