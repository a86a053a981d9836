"""The worker's and the archiver's ``/ready`` through a real outage: each service reaches RabbitMQ or
Redis through a TCP forwarder the test cuts for a while; ``/ready`` is 503 throughout and 200 again
after the dependency is back (the robust connection reconnected, the Redis pool replaced its dead
connections)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from helpers import SingleRedis, start_client, wait_for
from tcp_proxy import TcpProxy, target_of, via

from archiver.http import create_archiver_health_app
from inference_worker.http import create_worker_health_app

OUTAGE_SECONDS = 2.0

Client = TestClient[web.Request, web.Application]


@pytest.fixture(scope="session")
def redis_target(single_redis_url: str) -> SingleRedis:
    """A forwarder stands in for one Redis node (a cluster client would follow its redirects)."""
    return SingleRedis(single_redis_url)


@pytest.fixture(params=["rabbitmq", "redis"])
async def outage(
    request: pytest.FixtureRequest, rabbitmq_url: str, single_redis_url: str
) -> AsyncIterator[tuple[str, TcpProxy, dict[str, str]]]:
    """(dependency, its forwarder, the settings that route a service through it)."""
    dependency = str(request.param)
    url, port, variable = (
        (rabbitmq_url, 5672, "RABBITMQ_URL")
        if dependency == "rabbitmq"
        else (single_redis_url, 6379, "REDIS_URL")
    )
    proxy = TcpProxy(*target_of(url, port))
    await proxy.start()
    yield dependency, proxy, {variable: via(url, proxy)}
    await proxy.close()


@pytest.fixture(params=["worker", "archiver"])
async def service_health(
    request: pytest.FixtureRequest, worker_factory: Any, archiver_factory: Any, outage: Any
) -> AsyncIterator[Client]:
    """The health port of a worker or an archiver whose dependency goes through the forwarder."""
    _, _, env = outage
    if request.param == "worker":
        app = create_worker_health_app(await worker_factory(**env))
    else:
        app = create_archiver_health_app(await archiver_factory(sweep=False, **env))
    client = await start_client(app)
    yield client
    await client.close()


async def _status(client: Client) -> int:
    response = await client.get("/ready")
    await response.read()
    return int(response.status)


async def test_ready_follows_the_dependency_through_an_outage(
    service_health: Client, outage: tuple[str, TcpProxy, dict[str, str]]
) -> None:
    dependency, proxy, _ = outage
    assert await _status(service_health) == 200

    await proxy.cut()

    async def unready() -> bool:
        return await _status(service_health) == 503

    await wait_for(unready, timeout=2, what=f"/ready 503 once {dependency} is lost")
    loop = asyncio.get_running_loop()
    end = loop.time() + OUTAGE_SECONDS
    while loop.time() < end:
        response = await service_health.get("/ready")
        assert response.status == 503, f"ready while {dependency} is away"
        assert (await response.json())["error"] == "not_ready"
        assert response.headers["Retry-After"] == "1"
        await asyncio.sleep(0.2)

    await proxy.restore()

    async def ready() -> bool:
        return await _status(service_health) == 200

    await wait_for(ready, timeout=10, what=f"/ready 200 after {dependency} is back")
