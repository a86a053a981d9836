"""Ollama cluster routing in the worker, with several simulator processes' worth of nodes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from helpers import KeyPair, auth_header, start_server, wait_for

from inference_worker.simulator import STATE_KEY, SimulatorConfig, create_simulator_app

NodeFactory = Callable[..., Awaitable[TestServer]]


class Gate:
    """In front of one node's ``/api/chat``: holds generations while closed, counts arrivals and
    the most generations the node had at once (counted on arrival, so none is missed)."""

    def __init__(self, *, closed: bool = False) -> None:
        self._open = asyncio.Event()
        if not closed:
            self._open.set()
        self.arrived = 0
        self.in_flight = 0
        self.peak = 0

    def open(self) -> None:
        self._open.set()

    def install(self, app: web.Application) -> None:
        @web.middleware
        async def gate(request: web.Request, handler: Any) -> web.StreamResponse:
            if request.path != "/api/chat":
                return await handler(request)  # /api/tags probes pass
            self.arrived += 1
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            try:
                await self._open.wait()
                response: web.StreamResponse = await handler(request)
                return response
            finally:
                self.in_flight -= 1

        app.middlewares.append(gate)


@pytest.fixture
async def nodes() -> AsyncIterator[NodeFactory]:
    servers: list[TestServer] = []

    async def start(port: int | None = None, gate: Gate | None = None, **config: Any) -> TestServer:
        app = create_simulator_app(SimulatorConfig(**{"ttft_ms": 2, "tokens_per_second": 0, **config}))
        if gate is not None:
            gate.install(app)
        server = await start_server(app, port)
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


async def test_a_node_still_generating_is_passed_over_for_an_idle_one(
    nodes: NodeFactory, worker_factory: Any, gateway: Any, keys: KeyPair
) -> None:
    """Least busy first: why a slow node, whose generations last longer, gets fewer requests."""
    fast = await nodes()
    slow_gate = Gate(closed=True)  # a node so slow that its generations never end while closed
    slow = await nodes(gate=slow_gate)
    worker = await worker_factory(OLLAMA_URLS=f"{url(fast)},{url(slow)}")
    token = keys.mint("u")

    async def send(i: int) -> asyncio.Task[int]:
        """Start a chat; return once it was answered (by the fast node) or is held by the slow one."""
        request = asyncio.create_task(chat(gateway, token, i))
        arrived = slow_gate.arrived

        async def landed() -> bool:
            return request.done() or slow_gate.arrived > arrived

        await wait_for(landed, what=f"request {i} answered or held")
        return request

    # One request at a time, until one lands on the slow node (idle nodes take turns) and stays.
    held = [request for request in [await send(i) for i in range(2)] if not request.done()]
    assert len(held) == 1, "idle nodes take turns: one of two requests went to the slow node"

    for i in range(2, 10):
        request = await send(i)
        assert request.done(), f"request {i} went to the node still generating"
        assert request.result() == 200
    assert slow_gate.arrived == 1
    assert {n.url: n.in_flight for n in worker.pool.nodes} == {url(fast): 0, url(slow): 1}

    slow_gate.open()
    assert await held[0] == 200


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
    """OLLAMA_NUM_PARALLEL reaches the pool (whose limit test_node_pool.py proves in detail)."""
    gate = Gate(closed=True)
    node = await nodes(gate=gate, tokens_per_second=60)  # 24 tokens: ~0.4 s once the gate opens
    worker = await worker_factory(OLLAMA_URLS=url(node), OLLAMA_NUM_PARALLEL="2")
    requests = [asyncio.create_task(chat(gateway, keys.mint(f"p{i}"), i)) for i in range(5)]

    async def two_held_and_all_taken() -> bool:
        assert gate.arrived <= 2, f"{gate.arrived} generations on a node limited to 2"
        return gate.arrived == 2 and worker.busy == 5

    await wait_for(two_held_and_all_taken)  # the other three wait in the worker for a slot
    gate.open()
    assert await asyncio.gather(*requests) == [200] * 5
    assert (gate.arrived, gate.peak) == (5, 2)
