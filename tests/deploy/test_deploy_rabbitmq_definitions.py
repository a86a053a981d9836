"""compose/rabbitmq_definitions.py, the compose job that imports the broker topology into RabbitMQ."""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import json
import os
import secrets
import sys
import uuid
from types import ModuleType
from typing import Any

import aio_pika
import aiohttp
import pytest
from aiohttp import web
from aiormq.exceptions import ChannelAccessRefused
from deploy_support import ROOT
from helpers import RabbitManagement, start_server
from yarl import URL

from common.settings import SettingsError

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


def test_the_integrator_gets_its_generated_password_and_no_placeholder() -> None:
    script = load_script()
    assert all("password" not in u for u in script.build_definitions({})["users"])
    document = script.build_definitions(
        {"RABBITMQ_INTEGRATOR_USER": "crm", "RABBITMQ_INTEGRATOR_PASSWORD": "3f9c0d1e2b7a"}
    )
    assert document["users"] == [{"name": "crm", "tags": "", "password": "3f9c0d1e2b7a"}]
    assert [p["user"] for p in document["permissions"]] == ["crm"]
    with pytest.raises(SettingsError, match="placeholder"):
        script.build_definitions({"ENVIRONMENT": "production", "RABBITMQ_INTEGRATOR_PASSWORD": "change-me"})


async def test_the_imported_integrator_may_publish_requests_and_use_only_its_own_reply_queues(
    amqp: Any, namespace: str, rabbitmq_url: str, rabbitmq_management: RabbitManagement
) -> None:
    """The definitions the compose and Kubernetes jobs import, into the real broker: the integrator
    logs in with its password and holds exactly an integrator's rights."""
    user, password = f"integrator-{uuid.uuid4().hex[:10]}", secrets.token_hex(16)
    document = load_script().build_definitions(
        {
            "BROKER_PREFIX": namespace,
            "RABBITMQ_VHOST": rabbitmq_management.vhost,
            "RABBITMQ_INTEGRATOR_USER": user,
            "RABBITMQ_INTEGRATOR_PASSWORD": password,
        }
    )
    admin = URL(rabbitmq_url)
    management = rabbitmq_management.api.removesuffix("/api")
    await asyncio.to_thread(
        load_script().import_definitions,
        management,
        admin.user or "guest",
        admin.password or "guest",
        document,
        attempts=1,
        delay=0,
    )
    try:
        connection = await aio_pika.connect(str(admin.with_user(user).with_password(password)))
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            replies = await channel.declare_queue(f"{namespace}.integrations.{user}.r1", exclusive=True)
            requests = await channel.get_exchange(f"{namespace}.requests", ensure=False)
            await requests.publish(
                aio_pika.Message(b"{}", user_id=user, reply_to=replies.name), routing_key="chat"
            )
            # Not its own: another integrator's reply queue, the request and dead-letter queues
            # (the passive declares pass, reading them does not), the cancel exchange.
            for name in (f"{namespace}.integrations.someone-else.r1", f"{namespace}.requests"):
                with pytest.raises(ChannelAccessRefused):
                    await (await connection.channel()).declare_queue(name, exclusive=True)
            for name in (f"{namespace}.requests", f"{namespace}.dead-letter"):
                queue = await (await connection.channel()).declare_queue(name, passive=True)
                with pytest.raises(ChannelAccessRefused):
                    await queue.get(fail=False)
            confirmed = await connection.channel(publisher_confirms=True)
            cancel = await confirmed.get_exchange(f"{namespace}.cancel", ensure=False)
            with pytest.raises(ChannelAccessRefused):
                await cancel.publish(aio_pika.Message(b"{}", user_id=user), routing_key="")
    finally:
        async with aiohttp.ClientSession(headers=rabbitmq_management.headers) as http:
            await http.delete(f"{rabbitmq_management.api}/users/{user}")
