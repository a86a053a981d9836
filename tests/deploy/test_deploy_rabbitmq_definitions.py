"""compose/rabbitmq_definitions.py, the compose job that imports the broker topology into RabbitMQ."""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import json
import os
import sys
from types import ModuleType
from typing import Any

from aiohttp import web
from deploy_support import ROOT
from helpers import start_server

SCRIPT = ROOT / "compose" / "rabbitmq_definitions.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("rabbitmq_definitions", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_defaults_match_the_committed_definitions() -> None:
    committed = json.loads((ROOT / "broker" / "definitions.json").read_text())
    assert load_script().build_definitions({}) == committed


def test_definitions_follow_the_services_settings() -> None:
    document = load_script().build_definitions(
        {"BROKER_PREFIX": "acme", "REQUEST_QUEUE_MAX_LENGTH": "77", "REQUEST_DELIVERY_LIMIT": "3"}
    )
    queues = {q["name"]: q["arguments"] for q in document["queues"]}
    assert queues["acme.requests"]["x-max-length"] == 77
    assert queues["acme.requests"]["x-delivery-limit"] == 3
    assert {b["source"] for b in document["bindings"]} == {"acme.dlx", "acme.requests", "acme.events"}


async def run_script(url: str, password: str) -> tuple[int, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "RABBITMQ_MANAGEMENT_URL": url,
        "RABBITMQ_USER": "chat",
        "RABBITMQ_PASSWORD": password,
        "IMPORT_ATTEMPTS": "20",
        "IMPORT_RETRY_SECONDS": "0.05",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, output.decode()


async def test_imports_through_the_management_api_retrying_while_it_starts() -> None:
    received: list[dict[str, Any]] = []
    calls = 0

    async def definitions(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        if calls < 3:  # the management plugin is still starting
            return web.Response(status=503)
        expected = "Basic " + base64.b64encode(b"chat:pw-for-the-test").decode()
        if request.headers.get("Authorization") != expected:
            return web.Response(status=401)
        received.append(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/api/definitions", definitions)
    server = await start_server(app)
    try:
        code, output = await run_script(str(server.make_url("")), "pw-for-the-test")
        assert code == 0, output
        assert received and {q["name"] for q in received[0]["queues"]} >= {"chat.requests"}

        code, output = await run_script(str(server.make_url("")), "wrong")
        assert code != 0
        assert "refused: 401" in output
    finally:
        await server.close()
