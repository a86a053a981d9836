"""Async jobs over HTTP and straight on RabbitMQ; cancellation and deadlines stop the generation."""

from __future__ import annotations

import time
from typing import Any

import aio_pika
from helpers import KeyPair, auth_header, broker_user, wait_for

from broker.messages import ChatRequest, encoder
from broker.topology import QueueLimits, Topology
from inference_worker.simulator import STATE_KEY as SIM_STATE
from inference_worker.simulator import SimulatorConfig
from inference_worker.simulator_text import expected_answer


async def _wait_status(gateway: Any, token: str, job_id: str, status: str) -> dict[str, Any]:
    """The job's body once its status is ``status``."""

    async def reached() -> dict[str, Any] | None:
        response = await gateway.get(f"/jobs/{job_id}", headers=auth_header(token))
        result: dict[str, Any] = await response.json()
        return result if result.get("status") == status else None

    return await wait_for(reached, what=f"job {status}")


async def test_http_job_completes_and_is_readable(gateway: Any, worker: Any, keys: KeyPair) -> None:
    token = keys.mint("jobber")
    response = await gateway.post("/jobs", json={"prompt": "summarise this"}, headers=auth_header(token))
    assert response.status == 202
    body = await response.json()
    assert body["status"] == "queued"
    assert body["status_url"] == f"/jobs/{body['job_id']}"
    assert response.headers["Location"] == body["status_url"]
    job = await _wait_status(gateway, token, body["job_id"], "done")
    assert job["response"] == expected_answer("llama3.2", [{"role": "user", "content": "summarise this"}], 24)
    assert job["usage"]["completion_tokens"] == 24
    other = await gateway.get(f"/jobs/{body['job_id']}", headers=auth_header(keys.mint("someone-else")))
    assert other.status == 404


async def test_chat_with_async_flag_is_a_job_in_the_session(gateway: Any, worker: Any, keys: KeyPair) -> None:
    token = keys.mint("asyncer")
    response = await gateway.post(
        "/chat",
        json={"session_id": "js", "prompt": "later please", "async": True},
        headers=auth_header(token),
    )
    assert response.status == 202
    job_id = (await response.json())["job_id"]
    await _wait_status(gateway, token, job_id, "done")
    session = await (await gateway.get("/sessions/js", headers=auth_header(token))).json()
    assert [t["content"] for t in session["turns"] if t["role"] == "user"] == ["later please"]


async def test_job_submitted_on_rabbitmq_is_readable_over_http(
    gateway: Any, worker: Any, keys: KeyPair, amqp: Any, namespace: str
) -> None:
    now = time.time()
    request = ChatRequest(
        request_id="internal-job-0001",
        user_id="batch-system",
        org_id="org-test",
        session_id=None,
        prompt="nightly report",
        model="llama3.2",
        stream=False,
        deadline=now + 60,
        created_at=now,
        job_id="internal-job-0001",
    )
    channel = await amqp.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(Topology(namespace, QueueLimits()).requests_exchange)
    await exchange.publish(
        aio_pika.Message(encoder.encode(request), content_type="application/json", user_id=broker_user(amqp)),
        routing_key="chat",
    )
    job = await _wait_status(gateway, keys.mint("batch-system"), "internal-job-0001", "done")
    assert job["response"] == expected_answer("llama3.2", [{"role": "user", "content": "nightly report"}], 24)


async def test_cancelled_job_stops_its_generation(
    gateway: Any, worker: Any, simulator: Any, keys: KeyPair
) -> None:
    state = simulator.app[SIM_STATE]
    state.config = SimulatorConfig(ttft_ms=5, tokens_per_second=20, answer_tokens=400)
    token = keys.mint("canceller")
    job_id = (
        await (await gateway.post("/jobs", json={"prompt": "long"}, headers=auth_header(token))).json()
    )["job_id"]
    await _wait_status(gateway, token, job_id, "running")

    async def generating() -> bool:
        return bool(state.stats.tokens_generated >= 3)

    await wait_for(generating)
    response = await gateway.delete(f"/jobs/{job_id}", headers=auth_header(token))
    assert response.status == 202
    assert (await response.json())["status"] == "cancelled"

    async def aborted() -> bool:
        return bool(state.stats.generations_aborted == 1)

    await wait_for(aborted)
    await worker.run_until_idle(timeout=15)  # the cancelled request is settled, nothing runs

    async def partial_recorded() -> bool:
        job = await (await gateway.get(f"/jobs/{job_id}", headers=auth_header(token))).json()
        return bool(job["status"] == "cancelled" and job.get("usage", {}).get("completion_tokens", 0) > 0)

    await wait_for(partial_recorded)
    again = await gateway.delete(f"/jobs/{job_id}", headers=auth_header(token))
    assert again.status == 409


async def test_job_past_its_deadline_fails_and_stops_generating(
    gateway_factory: Any, worker: Any, simulator: Any, keys: KeyPair
) -> None:
    state = simulator.app[SIM_STATE]
    state.config = SimulatorConfig(ttft_ms=5, tokens_per_second=20, answer_tokens=400)
    gateway = await gateway_factory(JOB_DEADLINE_SECONDS="1.5")
    token = keys.mint("slowpoke")
    job_id = (
        await (await gateway.post("/jobs", json={"prompt": "long"}, headers=auth_header(token))).json()
    )["job_id"]
    job = await _wait_status(gateway, token, job_id, "failed")
    assert job["error"] == "deadline_exceeded"

    async def aborted() -> bool:
        return bool(state.stats.generations_aborted == 1)

    await wait_for(aborted)


async def test_bad_job_requests(gateway: Any, keys: KeyPair) -> None:
    token = keys.mint("bad")
    assert (await gateway.post("/jobs", json={}, headers=auth_header(token))).status == 400
    assert (await gateway.get("/jobs/nope", headers=auth_header(token))).status == 404
    assert (await gateway.get("/jobs/bad%20id", headers=auth_header(token))).status == 400
