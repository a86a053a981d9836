"""The usage ledger end to end: chats through every API (streamed, non-streamed, OpenAI, jobs, a
cancelled one, one redelivered after its worker was killed) are recorded once per request id,
``/usage`` agrees with what the clients saw, per user and per organization; losing Redis loses no
user, organization, key or ledger row; an organization over its monthly quota gets 429."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from helpers import auth_header, iter_sse, wait_for
from processes import service_processes

from auth.cli import create_admin
from auth.ledger import Ledger
from auth.settings import AuthSettings
from broker.messages import GenerationFinished
from inference_worker.simulator import STATE_KEY as SIM_STATE
from inference_worker.simulator import SimulatorConfig

PASSWORD = "testpass123"
ADMIN_PASSWORD = "Admin pass phrase 1"


@pytest.fixture
async def worker_process(worker_env: dict[str, str]) -> AsyncIterator[Callable[[], Any]]:
    async with service_processes() as services:

        async def start() -> asyncio.subprocess.Process:
            process, _ = await services.start("inference_worker", worker_env)
            return process

        yield start


async def _member(auth: Any, organization: str) -> dict[str, Any]:
    name = f"use_{uuid.uuid4().hex[:8]}"
    body = {
        "username": name,
        "password": PASSWORD,
        "email": f"{name}@company.com",
        "organization": organization,
    }
    resp = await auth.post("/register", json=body)
    assert resp.status == 201, await resp.text()
    user = await resp.json()
    tokens = await (await auth.post("/login", json={"username": name, "password": PASSWORD})).json()
    return {**user, "token": tokens["access_token"]}


async def _admin_token(auth: Any, env: dict[str, str]) -> str:
    """A platform admin, created as operators do (``python -m auth create-admin``)."""
    name = f"admin_{uuid.uuid4().hex[:8]}"
    settings = AuthSettings.from_env({**env, "AUTH_BCRYPT_ROUNDS": "4"})
    await create_admin(
        settings, username=name, email=f"{name}@company.com", organization="HQ", password=ADMIN_PASSWORD
    )
    tokens = await (await auth.post("/login", json={"username": name, "password": ADMIN_PASSWORD})).json()
    return str(tokens["access_token"])


async def _stream(gateway: Any, token: str, prompt: str) -> dict[str, int]:
    resp = await gateway.post(
        "/chat", json={"session_id": "s1", "prompt": prompt}, headers=auth_header(token)
    )
    assert resp.status == 200, await resp.text()
    events = [event async for event in iter_sse(resp)]
    assert events[-1].event == "done", events[-1]
    return dict(events[-1].data["usage"])


async def _plain(gateway: Any, token: str, prompt: str) -> dict[str, int]:
    body = {"session_id": "s2", "prompt": prompt, "stream": False}
    resp = await gateway.post("/chat", json=body, headers=auth_header(token))
    assert resp.status == 200, await resp.text()
    return dict((await resp.json())["usage"])


async def _openai(gateway: Any, token: str, prompt: str) -> dict[str, int]:
    body = {"model": "llama3.2", "messages": [{"role": "user", "content": prompt}]}
    resp = await gateway.post("/v1/chat/completions", json=body, headers=auth_header(token))
    assert resp.status == 200, await resp.text()
    usage = (await resp.json())["usage"]
    return {"prompt_tokens": usage["prompt_tokens"], "completion_tokens": usage["completion_tokens"]}


async def _job(gateway: Any, token: str, prompt: str) -> dict[str, int]:
    resp = await gateway.post("/jobs", json={"prompt": prompt}, headers=auth_header(token))
    assert resp.status == 202, await resp.text()
    job_id = (await resp.json())["job_id"]
    result: dict[str, Any] = {}

    async def finished() -> bool:
        nonlocal result
        result = await (await gateway.get(f"/jobs/{job_id}", headers=auth_header(token))).json()
        return bool(result["status"] == "done")

    await wait_for(finished, timeout=30)
    return {
        "prompt_tokens": result["usage"]["prompt_tokens"],
        "completion_tokens": result["usage"]["completion_tokens"],
    }


def _add(total: dict[str, int], usage: dict[str, int]) -> None:
    total["prompt_tokens"] = total.get("prompt_tokens", 0) + usage["prompt_tokens"]
    total["completion_tokens"] = total.get("completion_tokens", 0) + usage["completion_tokens"]


async def _usage(auth: Any, token: str, **params: str) -> dict[str, Any]:
    resp = await auth.get("/usage", params=params, headers=auth_header(token))
    assert resp.status == 200, await resp.text()
    data: dict[str, Any] = await resp.json()
    return data


async def test_usage_totals_equal_what_the_clients_saw_once_per_request(
    auth_factory: Any,
    key_gateway_env: Any,
    gateway_factory: Any,
    worker_factory: Any,
    worker_process: Any,
    simulator: Any,
    ledger: Ledger,
    auth_base_env: dict[str, str],
    redis: Any,
    namespace: str,
) -> None:
    auth = await auth_factory()
    gateway = await gateway_factory(**key_gateway_env(auth), RATE_LIMIT_PER_MINUTE="1000")
    alice, bob = await _member(auth, "Org A"), await _member(auth, "Org B")
    assert alice["organization_id"] != bob["organization_id"]
    key = await (
        await auth.post("/me/api-keys", json={"name": "cli"}, headers=auth_header(bob["token"]))
    ).json()
    seen: dict[str, dict[str, int]] = {alice["user_id"]: {}, bob["user_id"]: {}}
    state = simulator.app[SIM_STATE]

    # One request redelivered after its worker was killed before the first token: the client sees
    # one answer, the ledger one row.
    state.config = SimulatorConfig(ttft_ms=2000, tokens_per_second=0, answer_tokens=24)
    doomed = await worker_process()
    pending = asyncio.create_task(_plain(gateway, alice["token"], "redelivered"))

    async def generating() -> bool:
        return bool(state.stats.in_flight == 1)

    await wait_for(generating)  # the doomed worker took the request and called the model
    doomed.send_signal(signal.SIGKILL)
    await asyncio.wait_for(doomed.wait(), timeout=10)
    state.config = SimulatorConfig(ttft_ms=1, tokens_per_second=0, answer_tokens=12)
    worker = await worker_factory()
    _add(seen[alice["user_id"]], await pending)

    # 48 more through every API, alternating users (bob's with his API key).
    calls = (_stream, _plain, _openai, _job)
    for i in range(48):
        user = alice if i % 2 == 0 else bob
        token = user["token"] if user is alice else key["api_key"]
        _add(seen[user["user_id"]], await calls[i % 4](gateway, token, f"question {i}"))

    # One cancelled: the client stops the answer after the first token (a mere disconnect leaves
    # the stream RESUME_GRACE_SECONDS to be resumed); the tokens so far are recorded.
    state.config = SimulatorConfig(ttft_ms=1, tokens_per_second=20, answer_tokens=200)
    resp = await gateway.post(
        "/chat", json={"session_id": "s3", "prompt": "long"}, headers=auth_header(bob["token"])
    )
    first = await anext(aiter(iter_sse(resp)))
    assert first.event == "token"
    stop = await gateway.delete(
        f"/chat/{resp.headers['X-Chat-Request-Id']}", headers=auth_header(bob["token"])
    )
    assert stop.status == 204, await stop.text()
    resp.close()
    await worker.run_until_idle(timeout=30)
    await ledger.run_until_idle(timeout=30)

    async def cancelled_recorded() -> bool:
        return bool(await ledger._pool.fetchval("SELECT count(*) FROM usage WHERE outcome = 'cancelled'"))  # type: ignore[union-attr]

    await wait_for(cancelled_recorded, timeout=15)
    await ledger.run_until_idle(timeout=30)
    rows = await ledger._pool.fetch("SELECT * FROM usage")  # type: ignore[union-attr]
    assert len(rows) == 50 and len({r["request_id"] for r in rows}) == 50
    cancelled = [r for r in rows if r["outcome"] == "cancelled"]
    assert len(cancelled) == 1 and cancelled[0]["completion_tokens"] > 0
    assert {r["kind"] for r in rows} == {"chat", "openai", "job"}
    assert {r["key_id"] for r in rows if r["user_id"] == bob["user_id"]} >= {key["key_id"]}

    # Each member sees exactly their own; done rows equal what the clients saw.
    for user in (alice, bob):
        extra = cancelled[0]["completion_tokens"] if user is bob else 0
        report = await _usage(auth, user["token"], group_by="model")
        assert report["scope"] == "user"
        assert report["totals"]["prompt_tokens"] == seen[user["user_id"]]["prompt_tokens"]
        assert report["totals"]["completion_tokens"] == seen[user["user_id"]]["completion_tokens"] + extra
    admin = await _admin_token(auth, auth_base_env)
    by_org = await _usage(auth, admin, group_by="organization")
    per_org = {g["organization"]: g for g in by_org["groups"]}
    assert per_org[alice["organization_id"]]["requests"] == 25
    assert per_org[bob["organization_id"]]["requests"] == 25
    by_key = await _usage(auth, bob["token"], group_by="key")
    assert key["key_id"] in {g["key"] for g in by_key["groups"]}
    # A member asking for someone else's usage is refused.
    resp = await auth.get("/usage", params={"user_id": alice["user_id"]}, headers=auth_header(bob["token"]))
    assert resp.status == 403
    # The same events again (a redelivery of the whole batch): nothing counted twice.
    again = [
        GenerationFinished(
            request_id=r["request_id"],
            user_id=r["user_id"],
            org_id=r["organization_id"],
            model=r["model"],
            outcome="done",
            prompt_tokens=999,
            completion_tokens=999,
            finished_at=0.0,
        )
        for r in rows
    ]
    assert await ledger.record(again) == 0

    # Redis loses everything of this deployment: users, organizations, keys and usage stay.
    async for name in redis.scan_iter(match=f"{namespace}:*", count=500):
        await redis.delete(name)
    fresh_gateway = await gateway_factory(**key_gateway_env(auth))
    resp = await auth.post("/login", json={"username": alice["username"], "password": PASSWORD})
    assert resp.status == 200
    resp = await fresh_gateway.get("/sessions", headers=auth_header(key["api_key"]))
    assert resp.status == 200
    after = await _usage(auth, admin, group_by="organization")
    assert after["totals"] == by_org["totals"]
    listed = await (await auth.get("/me/api-keys", headers=auth_header(bob["token"]))).json()
    assert [k["key_id"] for k in listed["api_keys"]] == [key["key_id"]]


async def test_an_organization_over_its_monthly_quota_gets_429(
    auth_factory: Any,
    key_gateway_env: Any,
    gateway_factory: Any,
    worker: Any,
    simulator: Any,
    ledger: Ledger,
    auth_base_env: dict[str, str],
) -> None:
    simulator.app[SIM_STATE].config = SimulatorConfig(ttft_ms=1, tokens_per_second=0, answer_tokens=10)
    auth = await auth_factory()
    gateway = await gateway_factory(**key_gateway_env(auth), QUOTA_REFRESH_SECONDS="0.1")
    admin = await _admin_token(auth, auth_base_env)
    resp = await auth.post(
        "/admin/organizations",
        json={"name": "Metered", "monthly_token_quota": 30},
        headers=auth_header(admin),
    )
    org = await resp.json()
    invitation = await (
        await auth.post(
            f"/admin/organizations/{org['organization_id']}/invitations", json={}, headers=auth_header(admin)
        )
    ).json()
    name = f"q_{uuid.uuid4().hex[:8]}"
    body = {
        "username": name,
        "password": PASSWORD,
        "email": f"{name}@x.com",
        "invitation_token": invitation["invitation_token"],
    }
    assert (await auth.post("/register", json=body)).status == 201
    token = (await (await auth.post("/login", json={"username": name, "password": PASSWORD})).json())[
        "access_token"
    ]
    other = await _member(auth, "Unmetered")

    used = 0
    while used < 30:
        used += sum((await _plain(gateway, token, "spend")).values())

    async def refused() -> bool:
        resp = await gateway.post(
            "/chat", json={"session_id": "q1", "prompt": "more", "stream": False}, headers=auth_header(token)
        )
        if resp.status == 200:
            return False
        assert resp.status == 429
        data = await resp.json()
        assert data["error"] == "quota_exceeded" and "quota" in data["message"]
        assert int(resp.headers["Retry-After"]) > 0
        return True

    await wait_for(refused, timeout=15, interval=0.2)
    # Other organizations are not affected; reading and listing still work for the metered one.
    assert (
        await gateway.post(
            "/chat",
            json={"session_id": "q2", "prompt": "hi", "stream": False},
            headers=auth_header(other["token"]),
        )
    ).status == 200
    assert (await gateway.get("/sessions", headers=auth_header(token))).status == 200
    # Raising the quota lets the organization chat again within a few seconds.
    await auth.patch(
        f"/admin/organizations/{org['organization_id']}",
        json={"clear_quota": True},
        headers=auth_header(admin),
    )

    async def allowed() -> bool:
        resp = await gateway.post(
            "/chat", json={"session_id": "q1", "prompt": "again", "stream": False}, headers=auth_header(token)
        )
        return resp.status == 200

    await wait_for(allowed, timeout=15, interval=0.2)
