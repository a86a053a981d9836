"""A client's ``X-Request-ID`` is a trace id only: it never routes replies, names a job or a cancel.

Before this was fixed, two callers sending the same ``X-Request-ID`` shared one reply route: the
second stream received the first one's tokens and the first hung until its deadline, and a job
id chosen by one user could be cancelled by another.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import aio_pika
import pytest
from helpers import KeyPair, auth_header, broker_user, read_sse, text_of, wait_for

from broker.envelope import envelope
from broker.messages import Cancel, ChatDone, ChatRequest, ReplyBatch, TokenChunk, Usage, encoder
from broker.topology import QueueLimits, Topology
from gateway.replies import ReplyRouter
from inference_worker.simulator import STATE_KEY as SIM_STATE
from inference_worker.simulator import SimulatorConfig
from inference_worker.simulator_text import expected_answer

TRACE = "shared-trace-id-0001"
# Paced, so the two requests of each test overlap in time.
OVERLAPPING = SimulatorConfig(ttft_ms=30, tokens_per_second=400, answer_tokens=24)


def _answer(prompt: str) -> str:
    return expected_answer("llama3.2", [{"role": "user", "content": prompt}], 24)


async def _chat(gateway: Any, token: str, prompt: str, *, stream: bool) -> tuple[str, dict[str, Any], str]:
    response = await gateway.post(
        "/chat",
        json={"session_id": f"s-{uuid.uuid4().hex[:8]}", "prompt": prompt, "stream": stream},
        headers={**auth_header(token), "X-Request-ID": TRACE},
    )
    assert response.status == 200
    echoed = response.headers["X-Request-ID"]
    if stream:
        events = await read_sse(response)
        assert events[-1].event == "done", events[-1]
        return text_of(events), events[-1].data, echoed
    body = await response.json()
    return body["response"], body, echoed


async def test_two_users_with_one_trace_id_each_get_their_own_stream(
    gateway: Any, worker: Any, simulator: Any, keys: KeyPair
) -> None:
    simulator.app[SIM_STATE].config = OVERLAPPING
    alice, bob = keys.mint("alice"), keys.mint("bob")
    for stream in (True, False):
        (a_text, a_done, a_echo), (b_text, b_done, b_echo) = await asyncio.wait_for(
            asyncio.gather(
                _chat(gateway, alice, "alice asks about invoices", stream=stream),
                _chat(gateway, bob, "bob asks about holidays", stream=stream),
            ),
            timeout=20,
        )
        assert a_text == _answer("alice asks about invoices")
        assert b_text == _answer("bob asks about holidays")
        assert a_echo == b_echo == TRACE  # echoed back as the caller's trace id
        # The request id the server used is its own, and differs per request.
        assert a_done["request_id"] != TRACE and b_done["request_id"] != TRACE
        assert a_done["request_id"] != b_done["request_id"]


async def test_one_user_twice_with_one_trace_id(
    gateway: Any, worker: Any, simulator: Any, keys: KeyPair
) -> None:
    simulator.app[SIM_STATE].config = OVERLAPPING
    token = keys.mint("carol")
    prompts = [f"carol question {i}" for i in range(4)]
    results = await asyncio.wait_for(
        asyncio.gather(*(_chat(gateway, token, p, stream=True) for p in prompts)), timeout=20
    )
    assert [text for text, _, _ in results] == [_answer(p) for p in prompts]
    assert len({done["request_id"] for _, done, _ in results}) == len(prompts)


async def test_openai_completions_with_one_trace_id(
    gateway: Any, worker: Any, simulator: Any, keys: KeyPair
) -> None:
    simulator.app[SIM_STATE].config = OVERLAPPING

    async def complete(token: str, prompt: str, stream: bool) -> tuple[str, str]:
        response = await gateway.post(
            "/v1/chat/completions",
            json={"model": "llama3.2", "messages": [{"role": "user", "content": prompt}], "stream": stream},
            headers={**auth_header(token), "X-Request-ID": TRACE},
        )
        assert response.status == 200
        assert response.headers["X-Request-ID"] == TRACE
        if not stream:
            body = await response.json()
            return body["id"], body["choices"][0]["message"]["content"]
        text: list[str] = []
        completion_id = ""
        async for raw in response.content:
            line = raw.decode().strip()
            if line.startswith("data: {"):
                chunk = json.loads(line[6:])
                completion_id = chunk["id"]
                text += [c["delta"].get("content", "") for c in chunk["choices"]]
        return completion_id, "".join(text)

    calls = [
        complete(keys.mint("dave"), "dave wants a poem", True),
        complete(keys.mint("erin"), "erin wants a list", True),
        complete(keys.mint("dave"), "dave wants a summary", False),
        complete(keys.mint("erin"), "erin wants a table", False),
    ]
    results = await asyncio.wait_for(asyncio.gather(*calls), timeout=20)
    expected = ["dave wants a poem", "erin wants a list", "dave wants a summary", "erin wants a table"]
    assert [text for _, text in results] == [_answer(p) for p in expected]
    ids = [completion_id for completion_id, _ in results]
    assert len(set(ids)) == 4 and not any(TRACE in i for i in ids)


async def test_jobs_with_one_trace_id_are_separate_and_private(
    gateway: Any, worker: Any, simulator: Any, keys: KeyPair
) -> None:
    state = simulator.app[SIM_STATE]
    state.config = SimulatorConfig(ttft_ms=5, tokens_per_second=40, answer_tokens=60)
    victim, attacker = keys.mint("victim"), keys.mint("attacker")
    headers = {"X-Request-ID": TRACE}
    first = await gateway.post(
        "/jobs", json={"prompt": "victim job"}, headers={**auth_header(victim), **headers}
    )
    second = await gateway.post(
        "/jobs", json={"prompt": "attacker job"}, headers={**auth_header(attacker), **headers}
    )
    assert first.status == second.status == 202
    victim_job, attacker_job = (await first.json())["job_id"], (await second.json())["job_id"]
    assert TRACE not in (victim_job, attacker_job) and victim_job != attacker_job
    # The attacker can neither read nor cancel the victim's job, by its id or by the trace id.
    for job_id in (victim_job, TRACE):
        assert (await gateway.get(f"/jobs/{job_id}", headers=auth_header(attacker))).status == 404
        assert (await gateway.delete(f"/jobs/{job_id}", headers=auth_header(attacker))).status == 404
    # Cancelling their own job (same trace id) leaves the victim's running to the end.
    cancelled = await gateway.delete(f"/jobs/{attacker_job}", headers=auth_header(attacker))
    assert cancelled.status == 202

    async def victim_done() -> bool:
        job = await (await gateway.get(f"/jobs/{victim_job}", headers=auth_header(victim))).json()
        assert job["status"] in ("queued", "running", "done"), job
        return bool(job["status"] == "done")

    await wait_for(victim_done, timeout=20)
    job = await (await gateway.get(f"/jobs/{victim_job}", headers=auth_header(victim))).json()
    assert job["response"] == expected_answer("llama3.2", [{"role": "user", "content": "victim job"}], 60)
    attacker_view = await (await gateway.get(f"/jobs/{attacker_job}", headers=auth_header(attacker))).json()
    assert attacker_view["status"] == "cancelled"


async def test_a_cancel_naming_another_users_request_stops_nothing(
    worker: Any, simulator: Any, amqp: Any, namespace: str
) -> None:
    """At queue level, a cancel only stops the generation of the user it names."""
    state = simulator.app[SIM_STATE]
    state.config = SimulatorConfig(ttft_ms=5, tokens_per_second=50, answer_tokens=50)
    topology = Topology(namespace, QueueLimits())
    channel = await amqp.channel(publisher_confirms=True)
    replies = await channel.declare_queue(exclusive=True)
    requests = await channel.get_exchange(topology.requests_exchange)
    cancels = await channel.get_exchange(topology.cancel_exchange)
    now = time.time()
    request = ChatRequest(
        request_id="owned-by-frank-0001",
        user_id="frank",
        org_id="org",
        session_id=None,
        prompt="frank's long answer",
        model="llama3.2",
        deadline=now + 30,
        created_at=now,
        record=False,
    )
    await requests.publish(
        aio_pika.Message(
            encoder.encode(request),
            reply_to=replies.name,
            correlation_id=request.request_id,
            user_id=broker_user(amqp),
        ),
        routing_key="chat",
    )

    async def generating() -> bool:
        return bool(state.stats.tokens_generated >= 3)

    await wait_for(generating)
    wrong_owner = Cancel(
        request_id=request.request_id, user_id="mallory", org_id="org", reason="user_cancelled"
    )
    await cancels.publish(aio_pika.Message(encoder.encode(wrong_owner)), routing_key="")
    kinds: list[str] = []
    async with replies.iterator() as messages:
        async for message in messages:
            await message.ack()
            kinds.append(message.type or "")
            if message.type in ("done", "error"):
                break
    assert kinds[-1] == "done"
    assert state.stats.generations_aborted == 0


async def test_router_drops_a_reply_for_another_user(amqp: Any, namespace: str) -> None:
    """A reply whose body names another request or user never reaches the subscriber."""
    channel = await amqp.channel()
    dropped: list[str] = []
    router = ReplyRouter(channel, f"{namespace}.replies.identity", expires_seconds=60, on_drop=dropped.append)
    await router.start()
    try:
        with router.subscribe("rid-1", "alice") as queue:
            for user, request_id in (("bob", "rid-1"), ("alice", "rid-2"), ("alice", "rid-1")):
                chunk = TokenChunk(
                    request_id=request_id, user_id=user, org_id="o", generation="g", seq=0, content=user
                )
                await channel.default_exchange.publish(
                    aio_pika.Message(encoder.encode(chunk), correlation_id="rid-1"),
                    routing_key=router.address,
                )
            reply = await asyncio.wait_for(queue.get(), timeout=5)
            assert isinstance(reply, TokenChunk) and reply.user_id == "alice" and reply.request_id == "rid-1"
            await asyncio.sleep(0.2)
            assert queue.empty()
            assert dropped == ["mismatched", "mismatched"]
            with pytest.raises(RuntimeError), router.subscribe("rid-1", "bob"):
                pass
    finally:
        await router.close()


async def test_router_fans_a_batch_out_to_the_owners_of_its_frames_only(amqp: Any, namespace: str) -> None:
    """One batch carries frames of several requests and users: each frame reaches only the
    subscriber whose request and user it names; frames naming anything else are dropped."""
    channel = await amqp.channel()
    dropped: list[str] = []
    router = ReplyRouter(channel, f"{namespace}.replies.batch", expires_seconds=60, on_drop=dropped.append)
    await router.start()

    def chunk(request_id: str, user_id: str, content: str, seq: int = 0) -> TokenChunk:
        return TokenChunk(
            request_id=request_id, user_id=user_id, org_id="o", generation="g", seq=seq, content=content
        )

    done = ChatDone(
        request_id="rid-a",
        user_id="alice",
        org_id="o",
        generation="g",
        session_id=None,
        model="m",
        chunks=2,
        done_reason="stop",
        usage=Usage(),
    )
    frames = [
        chunk("rid-a", "alice", "alice 1"),
        chunk("rid-a", "bob", "bob posing as alice's request"),
        chunk("rid-b", "alice", "a request nobody here waits for"),
        chunk("rid-c", "carol", "carol 1"),
        chunk("rid-c", "alice", "alice's frame naming carol's request"),
        chunk("rid-a", "alice", "alice 2", seq=1),
        done,
    ]
    try:
        with router.subscribe("rid-a", "alice") as alice, router.subscribe("rid-c", "carol") as carol:
            body = encoder.encode(ReplyBatch(frames=frames))
            # A correlation id on a batch routes nothing: every frame is checked on its own.
            for correlation_id in (None, "rid-a", "rid-gone"):
                message = envelope(body, type="batch", persistent=False, correlation_id=correlation_id)
                await channel.default_exchange.publish(message, routing_key=router.address)
                got_alice = [await asyncio.wait_for(alice.get(), timeout=5) for _ in range(3)]
                got_carol = [await asyncio.wait_for(carol.get(), timeout=5)]
                assert [getattr(r, "content", "done") for r in got_alice] == ["alice 1", "alice 2", "done"]
                assert all(r.user_id == "alice" and r.request_id == "rid-a" for r in got_alice)
                assert [(r.user_id, r.content) for r in got_carol] == [("carol", "carol 1")]  # type: ignore[union-attr]
            await asyncio.sleep(0.2)
            assert alice.empty() and carol.empty()
            assert dropped == ["mismatched", "unroutable", "mismatched"] * 3
    finally:
        await router.close()
