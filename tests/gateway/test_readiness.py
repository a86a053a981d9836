"""``/ready`` tells the truth through a real outage: the gateway reaches RabbitMQ (or Redis) through
a TCP forwarder the test cuts for a few seconds. While cut, ``/ready`` is 503 (HAProxy drains the
instance); once restored, 200 again and chats work, without restarting anything."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from helpers import KeyPair, SingleRedis, auth_header, read_sse, wait_for
from tcp_proxy import TcpProxy, target_of, via

OUTAGE_SECONDS = 3.0


@pytest.fixture(scope="session")
def redis_target(single_redis_url: str) -> SingleRedis:
    """A forwarder stands in for one Redis node (a cluster client would follow its redirects)."""
    return SingleRedis(single_redis_url)


@pytest.fixture
async def redis_proxy(single_redis_url: str) -> AsyncIterator[TcpProxy]:
    proxy = TcpProxy(*target_of(single_redis_url, 6379))
    await proxy.start()
    yield proxy
    await proxy.close()


async def _ready(gateway: Any) -> tuple[int, dict[str, Any], str | None]:
    response = await gateway.get("/ready")
    return response.status, await response.json(), response.headers.get("Retry-After")


async def _stays_unready(gateway: Any, seconds: float, dependency: str) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        status, body, retry_after = await _ready(gateway)
        assert status == 503, body
        assert body["error"] == "not_ready"
        assert dependency in body["message"]
        assert retry_after == "1"
        await asyncio.sleep(0.2)


async def _chat(gateway: Any, token: str) -> int:
    response = await gateway.post(
        "/chat", json={"session_id": "s", "prompt": "hi", "stream": False}, headers=auth_header(token)
    )
    await response.read()
    return int(response.status)


async def test_ready_is_503_while_the_broker_is_away_and_200_once_it_is_back(
    gateway_factory: Any, worker: Any, broker_proxy: TcpProxy, rabbitmq_url: str, keys: KeyPair
) -> None:
    gateway = await gateway_factory(RABBITMQ_URL=via(rabbitmq_url, broker_proxy))
    token = keys.mint("u")
    assert (await _ready(gateway))[0] == 200
    assert await _chat(gateway, token) == 200

    await broker_proxy.cut()

    async def unready() -> bool:
        return (await _ready(gateway))[0] == 503

    await wait_for(unready, timeout=2, what="/ready 503 once the broker connection is lost")
    await _stays_unready(gateway, OUTAGE_SECONDS, "rabbitmq")
    started = asyncio.get_running_loop().time()
    assert await _chat(gateway, token) == 503, "a chat meanwhile is refused, not left hanging"
    assert asyncio.get_running_loop().time() - started < 6

    await broker_proxy.restore()

    async def ready_again() -> bool:
        return (await _ready(gateway))[0] == 200

    await wait_for(ready_again, timeout=10, what="/ready 200 after the broker is back")
    response = await gateway.post(
        "/chat", json={"session_id": "s", "prompt": "hi"}, headers=auth_header(token)
    )
    assert response.status == 200
    assert (await read_sse(response))[-1].event == "done"


async def test_ready_is_503_while_redis_is_away_and_200_once_it_is_back(
    gateway_factory: Any, worker: Any, redis_proxy: TcpProxy, single_redis_url: str, keys: KeyPair
) -> None:
    gateway = await gateway_factory(REDIS_URL=via(single_redis_url, redis_proxy))
    assert (await _ready(gateway))[0] == 200

    await redis_proxy.cut()
    await _stays_unready(gateway, OUTAGE_SECONDS, "redis")
    await redis_proxy.restore()

    async def ready_again() -> bool:
        return (await _ready(gateway))[0] == 200

    await wait_for(ready_again, timeout=5, what="/ready 200 after Redis is back")
    assert await _chat(gateway, keys.mint("u")) == 200, "the pooled connections cut meanwhile are replaced"


async def test_a_chat_whose_worker_cannot_reach_redis_is_a_retryable_503_not_an_internal_error(
    gateway: Any, worker_factory: Any, redis_proxy: TcpProxy, single_redis_url: str, keys: KeyPair
) -> None:
    """The worker reads the session before it generates: with its Redis away (restarting, after
    redis-py's retries) the client is told ``store_unavailable`` with Retry-After, in both reply
    shapes, and the chat works again once Redis is back."""
    await worker_factory(REDIS_URL=via(single_redis_url, redis_proxy))
    headers = auth_header(keys.mint("u"))
    await redis_proxy.cut()
    response = await gateway.post(
        "/chat", json={"session_id": "s", "prompt": "hi", "stream": False}, headers=headers
    )
    assert response.status == 503, await response.text()
    assert (await response.json())["error"] == "store_unavailable"
    assert response.headers["Retry-After"]
    streamed = await gateway.post("/chat", json={"session_id": "s", "prompt": "hi"}, headers=headers)
    events = await read_sse(streamed)
    assert events[-1].event == "error"
    assert events[-1].data["error"] == "store_unavailable"
    await redis_proxy.restore()
    assert await _chat(gateway, keys.mint("u")) == 200
