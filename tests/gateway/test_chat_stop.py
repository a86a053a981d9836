"""``DELETE /chat/{request_id}`` (the chat page's Stop): the generation stops at once, not after
the resume grace period a mere disconnect gets; only the caller's own requests."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from helpers import KeyPair, auth_header, iter_sse, read_sse, wait_for

from inference_worker.simulator import STATE_KEY as SIM_STATE
from inference_worker.simulator import SimulatorConfig


@pytest.fixture
def sim_config() -> SimulatorConfig:
    return SimulatorConfig(ttft_ms=5, tokens_per_second=20, answer_tokens=400)  # 20 s of answer


async def test_stop_aborts_the_generation_at_the_model_well_before_the_grace_period(
    gateway_factory: Any, worker: Any, simulator: TestServer, keys: KeyPair
) -> None:
    gateway = await gateway_factory(RESUME_GRACE_SECONDS="30")
    token = keys.mint("u")
    stats = simulator.app[SIM_STATE].stats
    response = await gateway.post(
        "/chat", json={"session_id": "s", "prompt": "go on"}, headers=auth_header(token)
    )
    request_id = response.headers["X-Chat-Request-Id"]
    events = iter_sse(response)
    for _ in range(3):
        assert (await anext(events)).event == "token"

    stopped = await gateway.delete(f"/chat/{request_id}", headers=auth_header(token))
    assert stopped.status == 204

    async def aborted() -> bool:
        return stats.generations_aborted == 1

    await wait_for(aborted, timeout=5, what="the simulator's generation aborted")
    assert stats.generations_completed == 0
    response.close()  # the page aborts its fetch along with the DELETE


async def test_only_the_callers_own_running_requests_can_be_stopped(
    gateway: Any, worker: Any, simulator: TestServer, keys: KeyPair
) -> None:
    owner = keys.mint("owner")
    simulator.app[SIM_STATE].config = SimulatorConfig(ttft_ms=5, tokens_per_second=0, answer_tokens=8)
    response = await gateway.post(
        "/chat", json={"session_id": "s", "prompt": "hi"}, headers=auth_header(owner)
    )
    await read_sse(response)
    request_id = response.headers["X-Chat-Request-Id"]

    stranger = await gateway.delete(f"/chat/{request_id}", headers=auth_header(keys.mint("mallory")))
    assert stranger.status == 404
    assert (await stranger.json())["error"] == "unknown_request"
    for bad in ("0" * 32, "NOT-HEX"):
        unknown = await gateway.delete(f"/chat/{bad}", headers=auth_header(owner))
        assert unknown.status == 404
        assert (await unknown.json())["error"] == "unknown_request"
    finished = await gateway.delete(f"/chat/{request_id}", headers=auth_header(owner))
    assert finished.status == 204  # it ended already: nothing to stop
