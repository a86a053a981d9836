"""A model node that goes away and comes back: the worker routes to it again within 2 s of its
return, whatever its cooldown and the probe interval (a failed node is re-probed every 0.5 s), and
a node that dies in the middle of an answer is reported as a failed node to the client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from helpers import KeyPair, auth_header, iter_sse, simulator_url, start_server
from tcp_proxy import TcpProxy

from inference_worker.simulator import STATE_KEY as SIM_STATE
from inference_worker.simulator import SimulatorConfig, create_simulator_app

RECOVERY_SECONDS = 2.0


async def _chat(gateway: Any, token: str) -> tuple[int, dict[str, Any]]:
    response = await gateway.post(
        "/chat", json={"session_id": "s", "prompt": "hi", "stream": False}, headers=auth_header(token)
    )
    return int(response.status), await response.json()


@pytest.fixture
async def node() -> AsyncIterator[list[TestServer]]:
    """The one model node (a list, so a test can replace it with a restarted one)."""
    servers = [await start_server(create_simulator_app(SimulatorConfig(ttft_ms=2, tokens_per_second=0)))]
    yield servers
    for server in servers:
        await server.close()


async def test_a_node_back_from_a_restart_takes_chats_within_two_seconds(
    node: list[TestServer], worker_factory: Any, gateway: Any, keys: KeyPair
) -> None:
    # The defaults: a failed node cools down 15 s and more, nodes are probed every 10 s.
    await worker_factory(OLLAMA_URLS=simulator_url(node[0]))
    token = keys.mint("u")
    assert (await _chat(gateway, token))[0] == 200

    port = node[0].port
    await node[0].close()
    status, body = await _chat(gateway, token)
    assert status == 503, body
    assert body["error"] in {"model_unavailable", "no_model_node"}
    await asyncio.sleep(1.0)  # well into its cooldown
    assert (await _chat(gateway, token))[0] == 503

    node.append(await start_server(create_simulator_app(SimulatorConfig(ttft_ms=2)), port))
    loop = asyncio.get_running_loop()
    back = loop.time()
    while (status := (await _chat(gateway, token))[0]) != 200:
        assert status == 503
        assert loop.time() - back < RECOVERY_SECONDS, "the node is not used again within 2 s"
        await asyncio.sleep(0.05)


async def test_a_node_dying_mid_answer_is_reported_as_a_failed_node(
    simulator: TestServer, worker_factory: Any, gateway: Any, keys: KeyPair
) -> None:
    """After the first token the answer cannot move to another node (the client would see text
    twice): the client is told that the model node failed, in so many words; an error the node
    itself reports mid-answer keeps its own code (tests/gateway/test_chat_delivery.py)."""
    simulator.app[SIM_STATE].config = SimulatorConfig(ttft_ms=2, tokens_per_second=50, answer_tokens=500)
    proxy = TcpProxy("127.0.0.1", simulator.port)
    await proxy.start()
    try:
        await worker_factory(OLLAMA_URLS=f"http://{proxy.address}")
        token = keys.mint("u")
        response = await gateway.post(
            "/chat", json={"session_id": "s", "prompt": "hi"}, headers=auth_header(token)
        )
        events = aiter(iter_sse(response))
        assert (await anext(events)).event == "token"
        await proxy.cut()  # the node's host dies: the connection is reset mid-answer
        rest = [event async for event in events]
        assert rest[-1].event == "error"
        assert rest[-1].data["error"] == "model_node_failed"
        assert "model node failed" in rest[-1].data["message"]

        await proxy.restore()
        simulator.app[SIM_STATE].config = SimulatorConfig(ttft_ms=2, tokens_per_second=0)
        loop = asyncio.get_running_loop()
        back = loop.time()
        while (status := (await _chat(gateway, token))[0]) != 200:
            assert status == 503
            assert loop.time() - back < RECOVERY_SECONDS
            await asyncio.sleep(0.05)
    finally:
        await proxy.close()
