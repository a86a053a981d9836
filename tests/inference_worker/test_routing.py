"""Ollama cluster routing in the worker, with several simulator processes' worth of nodes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from helpers import KeyPair, auth_header, start_server, wait_for

from inference_worker.simulator import STATE_KEY, SimulatorConfig, create_simulator_app

NodeFactory = Callable[..., Awaitable[TestServer]]


@pytest.fixture
async def nodes() -> AsyncIterator[NodeFactory]:
    servers: list[TestServer] = []

    async def start(port: int | None = None, **config: Any) -> TestServer:
        server = await start_server(
            create_simulator_app(SimulatorConfig(**{"ttft_ms": 2, "tokens_per_second": 0, **config})), port
        )
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()


def url(server: TestServer) -> str:
    return str(server.make_url("")).rstrip("/")


def started(server: TestServer) -> int:
    return int(server.app[STATE_KEY].stats.generations_started)


async def chat(gateway: Any, token: str, i: int, model: str = "llama3.2") -> int:
    response = await gateway.post(
        "/chat",
        json={"session_id": f"s{i}", "prompt": f"p{i}", "stream": False, "model": model},
        headers=auth_header(token),
    )
    await response.read()
    return int(response.status)


async def test_requests_keep_succeeding_when_a_node_dies_and_use_it_again_when_back(
    nodes: NodeFactory, worker_factory: Any, gateway: Any, keys: KeyPair
) -> None:
    a, b = await nodes(), await nodes()
    await worker_factory(
        OLLAMA_URLS=f"{url(a)},{url(b)}", OLLAMA_NODE_COOLDOWN="0.3", OLLAMA_PROBE_INTERVAL_SECONDS="0.2"
    )
    token = keys.mint("u")
    assert [await chat(gateway, token, i) for i in range(6)] == [200] * 6
    assert started(a) > 0
    assert started(b) > 0

    port = a.port
    await a.close()
    assert [await chat(gateway, token, i) for i in range(6, 16)] == [200] * 10, "the dead node is skipped"

    revived = await nodes(port=port)
    before = started(b)

    async def used_again() -> bool:
        await chat(gateway, token, 99)
        return started(revived) > 0

    await wait_for(used_again, timeout=15, interval=0.2)
    assert started(b) >= before


async def test_slow_node_gets_fewer_requests(
    nodes: NodeFactory, worker_factory: Any, gateway: Any, keys: KeyPair
) -> None:
    fast = await nodes()
    slow = await nodes(tokens_per_second=40)  # 24 tokens: ~0.6 s per answer
    await worker_factory(OLLAMA_URLS=f"{url(fast)},{url(slow)}")
    tokens = [keys.mint(f"user{i}") for i in range(8)]

    async def client(k: int) -> None:
        for i in range(6):
            assert await chat(gateway, tokens[k], k * 100 + i) == 200

    await asyncio.gather(*(client(k) for k in range(8)))
    assert started(fast) + started(slow) == 48
    assert started(fast) > 2 * started(slow)


async def test_node_without_the_model_gets_none(
    nodes: NodeFactory, worker_factory: Any, gateway: Any, keys: KeyPair
) -> None:
    llama_only = await nodes(models=("llama3.2",))
    qwen_only = await nodes(models=("qwen2.5",))
    await worker_factory(OLLAMA_URLS=f"{url(llama_only)},{url(qwen_only)}")
    token = keys.mint("u")
    assert [await chat(gateway, token, i, model="qwen2.5") for i in range(6)] == [200] * 6
    assert started(llama_only) == 0
    assert started(qwen_only) == 6
    missing = await chat(gateway, token, 7, model="mistral")
    assert missing == 400


async def test_busy_node_is_not_treated_as_dead(
    nodes: NodeFactory, worker_factory: Any, gateway: Any, keys: KeyPair
) -> None:
    busy = await nodes(max_queue=1, tokens_per_second=30)
    spare = await nodes()
    worker = await worker_factory(OLLAMA_URLS=f"{url(busy)},{url(spare)}")
    token = keys.mint("u")
    statuses = await asyncio.gather(*(chat(gateway, keys.mint(f"b{i}"), i) for i in range(6)))
    assert statuses == [200] * 6
    busy_node = next(n for n in worker.pool.nodes if n.url == url(busy))
    assert busy_node.consecutive_failures == 0, "503 'server busy' is not a failure"
    assert await chat(gateway, token, 50) == 200


async def test_per_node_parallel_limit_is_respected(
    nodes: NodeFactory, worker_factory: Any, gateway: Any, keys: KeyPair
) -> None:
    node = await nodes(tokens_per_second=60)
    await worker_factory(OLLAMA_URLS=url(node), OLLAMA_NUM_PARALLEL="2")
    stats = node.app[STATE_KEY].stats
    peak = 0
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, stats.in_flight)
            await asyncio.sleep(0.005)

    sampler = asyncio.create_task(sample())
    statuses = await asyncio.gather(*(chat(gateway, keys.mint(f"p{i}"), i) for i in range(5)))
    done.set()
    await sampler
    assert statuses == [200] * 5
    assert peak == 2
