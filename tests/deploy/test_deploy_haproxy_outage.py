"""A broker outage seen from the front door: the three gateways reach RabbitMQ through a TCP
forwarder the test cuts. Their ``/ready`` turns 503, HAProxy takes them all out, and a client gets
HAProxy's own 503 in the API's JSON shape with ``Retry-After`` at once (no gateway is asked, no
request waits in a queue); when the broker is back, the gateways come back and chats work."""

from __future__ import annotations

import asyncio
import uuid

import aiohttp
import pytest
from deploy_support import StackFactory
from helpers import KeyPair, SingleRedis, auth_header, read_sse
from tcp_proxy import TcpProxy, via

GATEWAYS = {f"gateways/gateway{i}": "DOWN" for i in (1, 2, 3)}


@pytest.fixture(scope="session")
def redis_target(single_redis_url: str) -> SingleRedis:
    """The outage is the broker's: one Redis is enough here."""
    return SingleRedis(single_redis_url)


async def test_a_broker_outage_drains_the_gateways_and_the_front_door_answers_503_at_once(
    stack_factory: StackFactory, broker_proxy: TcpProxy, rabbitmq_url: str, keys: KeyPair
) -> None:
    stack = await stack_factory({"RABBITMQ_URL": via(rabbitmq_url, broker_proxy)})
    url = stack.haproxy.http_url
    token = keys.mint(f"u-{uuid.uuid4().hex[:8]}")
    chat = {"session_id": "s", "prompt": "hi"}

    await broker_proxy.cut()
    await stack.haproxy.wait_status(GATEWAYS, timeout=10)
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as session:
        started = loop.time()
        async with session.post(f"{url}/chat", json=chat, headers=auth_header(token)) as response:
            assert response.status == 503
            assert response.headers["Content-Type"].startswith("application/json")
            assert (await response.json())["error"] == "unavailable"
            assert response.headers["Retry-After"] == "1"
        assert loop.time() - started < 1.0, "answered at once, not after a queue timeout"
        async with session.get(f"{url}/sessions", headers=auth_header(token)) as response:
            assert response.status == 503
            assert (await response.json())["error"] == "unavailable"
        async with session.get(f"{url}/ready") as response:
            assert response.status == 503
            assert (await response.json())["error"] == "not_ready"
            assert response.headers["Retry-After"] == "1"

        await broker_proxy.restore()
        await stack.haproxy.wait_status({name: "UP" for name in GATEWAYS}, timeout=15)
        async with session.post(f"{url}/chat", json=chat, headers=auth_header(token)) as response:
            assert response.status == 200, await response.text()
            assert (await read_sse(response))[-1].event == "done"
