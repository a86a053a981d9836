"""The reply queue outlives a dropped broker connection: a stream in flight when the gateway's
connection is cut resumes after aio-pika reconnects, with no text lost."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp.helpers import encode_basic_auth
from helpers import KeyPair, auth_header, iter_sse, text_of, wait_for

from gateway.appkeys import ROUTER
from inference_worker.simulator import STATE_KEY as SIM_STATE
from inference_worker.simulator import SimulatorConfig
from inference_worker.simulator_text import expected_answer

MANAGEMENT = "http://127.0.0.1:15672/api"
GUEST = {"Authorization": encode_basic_auth("guest", "guest")}


async def _connections_named(http: aiohttp.ClientSession, name: str) -> list[str]:
    async with http.get(f"{MANAGEMENT}/connections", headers=GUEST) as response:
        assert response.status == 200, await response.text()
        listed = await response.json()
    return [c["name"] for c in listed if (c.get("client_properties") or {}).get("connection_name") == name]


async def _queue(http: aiohttp.ClientSession, name: str) -> dict[str, Any] | None:
    async with http.get(f"{MANAGEMENT}/queues/%2F/{quote(name, safe='')}", headers=GUEST) as response:
        if response.status == 404:
            return None
        assert response.status == 200, await response.text()
        queue: dict[str, Any] = await response.json()
        return queue


async def test_a_stream_survives_the_gateway_losing_its_broker_connection(
    gateway_factory: Any, worker: Any, simulator: Any, keys: KeyPair, namespace: str
) -> None:
    simulator.app[SIM_STATE].config = SimulatorConfig(ttft_ms=5, tokens_per_second=200, answer_tokens=800)
    instance = f"{namespace}-gw"
    gateway = await gateway_factory(INSTANCE_ID=instance, CHAT_DEADLINE_SECONDS="20")
    reply_queue = gateway.app[ROUTER].address
    assert reply_queue.startswith(f"{namespace}.replies.{instance}.")

    async with aiohttp.ClientSession() as http:
        found: list[str] = []

        async def listed() -> bool:
            found[:] = await _connections_named(http, f"gateway-{instance}")
            return bool(found)

        await wait_for(listed, timeout=15)  # the management API lists a connection after a moment

        prompt = "tell me something long"
        response = await gateway.post(
            "/chat", json={"session_id": "s", "prompt": prompt}, headers=auth_header(keys.mint("u"))
        )
        assert response.status == 200
        events = aiter(iter_sse(response))
        first = await anext(events)
        assert first.event == "token"
        for name in found:  # the broker cuts the gateway off mid-stream, as a network failure would
            async with http.delete(
                f"{MANAGEMENT}/connections/{quote(name, safe='')}", headers={**GUEST, "X-Reason": "test"}
            ) as cut:
                assert cut.status == 204, await cut.text()

        rest = [event async for event in events]
        assert rest[-1].event == "done", rest[-1]
        expected = expected_answer("llama3.2", [{"role": "user", "content": prompt}], 800)
        assert text_of([first, *rest]) == expected

        # A gateway that dies leaves its queue to expire; one that stops deletes it at once.
        declared = await _queue(http, reply_queue)
        assert declared is not None
        assert declared["arguments"]["x-expires"] == (20 + 60) * 1000
        assert not declared["exclusive"]
        await gateway.close()
        assert await _queue(http, reply_queue) is None
