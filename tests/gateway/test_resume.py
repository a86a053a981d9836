"""Resumable streams (the README's contract): SSE ids, ``X-Chat-Request-Id``, and
``GET /chat/{request_id}/events`` with ``Last-Event-ID`` on any gateway, from the worker still
generating or from the committed record, exactly once and without a second generation."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from helpers import KeyPair, SseEvent, auth_header, iter_sse, read_sse, text_of, wait_for
from tcp_proxy import TcpProxy

from inference_worker.simulator import STATE_KEY as SIM_STATE
from inference_worker.simulator import SimulatorConfig
from inference_worker.simulator_text import expected_answer

PROMPT = "tell me a long story"


def answer(tokens: int) -> str:
    return expected_answer("llama3.2", [{"role": "user", "content": PROMPT}], tokens)


def check_ids(events: list[SseEvent], first: int) -> None:
    """Every event carries ``id:``: tokens their seq from ``first`` on, the final event the next."""
    assert [int(e.id or "-1") for e in events] == list(range(first, first + len(events)))
    for e in events[:-1]:
        assert e.event == "token" and e.data["seq"] == int(e.id or "-1")


async def resume(gateway: Any, request_id: str, token: str, last: int | None) -> Any:
    headers = auth_header(token)
    if last is not None:
        headers["Last-Event-ID"] = str(last)
    return await gateway.get(f"/chat/{request_id}/events", headers=headers)


async def session_turns(gateway: Any, token: str, session_id: str) -> list[dict[str, Any]]:
    response = await gateway.get(f"/sessions/{session_id}", headers=auth_header(token))
    assert response.status == 200, await response.text()
    turns: list[dict[str, Any]] = (await response.json())["turns"]
    return turns


async def test_every_event_has_an_id_and_the_stream_names_its_request(
    gateway: Any, worker: Any, keys: KeyPair
) -> None:
    headers = {**auth_header(keys.mint("u")), "X-Request-ID": "client-trace-1"}
    response = await gateway.post("/chat", json={"session_id": "s", "prompt": PROMPT}, headers=headers)
    events = await read_sse(response)
    check_ids(events, 0)
    assert events[-1].event == "done"
    assert int(events[-1].id or "-1") == len(events) - 1
    assert response.headers["X-Chat-Request-Id"] == events[-1].data["request_id"]
    assert response.headers["X-Chat-Request-Id"] != "client-trace-1"  # the server's id, never the client's


async def test_resume_after_finish_from_the_middle_gives_exactly_the_rest(
    gateway_factory: Any, worker: Any, keys: KeyPair
) -> None:
    first, other = await gateway_factory(), await gateway_factory()
    token = keys.mint("u")
    response = await first.post(
        "/chat", json={"session_id": "s", "prompt": PROMPT}, headers=auth_header(token)
    )
    events = await read_sse(response)
    request_id = response.headers["X-Chat-Request-Id"]
    tokens = [e for e in events if e.event == "token"]
    assert len(tokens) >= 4

    middle = len(tokens) // 2
    rest = await read_sse(await resume(other, request_id, token, middle))
    check_ids(rest, middle + 1)
    assert [e.data for e in rest] == [e.data for e in events[middle + 1 :]]
    assert text_of(tokens[: middle + 1]) + text_of(rest) == answer(24)

    whole = await read_sse(await resume(other, request_id, token, None))  # no Last-Event-ID: all
    assert [e.data for e in whole] == [e.data for e in events]
    turns = await session_turns(other, token, "s")
    assert [t["role"] for t in turns] == ["user", "assistant"]
    assert turns[1]["content"] == answer(24) and turns[1]["outcome"] == "done"


async def test_resume_of_another_users_or_an_unknown_request_is_404(
    gateway: Any, worker: Any, keys: KeyPair
) -> None:
    response = await gateway.post(
        "/chat", json={"session_id": "s", "prompt": PROMPT}, headers=auth_header(keys.mint("owner"))
    )
    await read_sse(response)
    request_id = response.headers["X-Chat-Request-Id"]
    stranger = await resume(gateway, request_id, keys.mint("mallory"), None)
    assert stranger.status == 404
    assert (await stranger.json())["error"] == "unknown_request"
    unknown = await resume(gateway, "0" * 32, keys.mint("owner"), None)
    assert unknown.status == 404
    assert (await unknown.json())["error"] == "unknown_request"


async def test_gateway_stopped_mid_stream_resumes_on_another_from_the_live_worker(
    gateway_factory: Any, worker: Any, simulator: Any, keys: KeyPair
) -> None:
    """The first gateway's app is shut down under a running stream; the client reconnects to the
    second with Last-Event-ID and gets the rest from the worker still generating: the whole
    answer exactly once, one generation, and the session holds it once."""
    tokens_total = 60
    simulator.app[SIM_STATE].config = SimulatorConfig(
        ttft_ms=5, tokens_per_second=40, answer_tokens=tokens_total
    )
    stats = simulator.app[SIM_STATE].stats
    doomed, survivor = await gateway_factory(), await gateway_factory()
    token = keys.mint("u")
    response = await doomed.post(
        "/chat", json={"session_id": "s", "prompt": PROMPT}, headers=auth_header(token)
    )
    request_id = response.headers["X-Chat-Request-Id"]
    seen: list[SseEvent] = []
    async for event in iter_sse(response):
        seen.append(event)
        if len(seen) == 3:
            break
    await doomed.close()  # the gateway goes away under the stream (its reply queue with it)
    assert stats.in_flight == 1, "the generation goes on"

    last = int(seen[-1].id or "-1")
    rest = await read_sse(await resume(survivor, request_id, token, last))
    check_ids(rest, last + 1)
    assert rest[-1].event == "done", rest[-1]
    assert text_of(seen) + text_of(rest) == answer(tokens_total)
    await worker.run_until_idle(timeout=15)
    assert stats.generations_started == 1 and stats.generations_completed == 1
    turns = await session_turns(survivor, token, "s")
    assert [t["role"] for t in turns] == ["user", "assistant"]
    assert turns[1]["content"] == answer(tokens_total)


async def test_client_reconnect_within_grace_resumes_the_same_generation_from_the_middle(
    gateway: Any, worker: Any, simulator: Any, keys: KeyPair
) -> None:
    tokens_total = 60
    simulator.app[SIM_STATE].config = SimulatorConfig(
        ttft_ms=5, tokens_per_second=40, answer_tokens=tokens_total
    )
    stats = simulator.app[SIM_STATE].stats
    token = keys.mint("u")
    response = await gateway.post(
        "/chat", json={"session_id": "s", "prompt": PROMPT}, headers=auth_header(token)
    )
    request_id = response.headers["X-Chat-Request-Id"]
    seen: list[SseEvent] = []
    async for event in iter_sse(response):
        seen.append(event)
        if len(seen) == 4:
            break
    response.close()  # the client's connection drops (a cancel with a grace period goes out)

    # It reconnects, having kept only the first two events.
    rest = await read_sse(await resume(gateway, request_id, token, 1))
    check_ids(rest, 2)
    assert text_of(seen[:2]) + text_of(rest) == answer(tokens_total)
    assert rest[-1].event == "done"
    await worker.run_until_idle(timeout=15)
    assert stats.generations_started == 1 and stats.generations_aborted == 0


def readme_client() -> Any:
    """The README's resuming client, as written there."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    start = readme.index("```python", readme.index("A client in Python (aiohttp)")) + len("```python")
    namespace: dict[str, Any] = {}
    exec(readme[start : readme.index("```", start)], namespace)
    return namespace["chat"]


async def test_the_readme_client_gets_the_whole_answer_when_its_gateway_dies(
    gateway_factory: Any, worker: Any, simulator: Any, keys: KeyPair
) -> None:
    tokens_total = 60
    simulator.app[SIM_STATE].config = SimulatorConfig(
        ttft_ms=5, tokens_per_second=40, answer_tokens=tokens_total
    )
    stats = simulator.app[SIM_STATE].stats
    doomed, survivor = await gateway_factory(), await gateway_factory()
    front = TcpProxy(doomed.host, doomed.port)  # one base URL, like HAProxy's
    await front.start()
    try:
        chat = asyncio.create_task(readme_client()(f"http://{front.address}", keys.mint("u"), "s", PROMPT))

        async def midway() -> bool:
            return bool(stats.in_flight == 1 and stats.tokens_generated >= 10)

        await wait_for(midway)
        await front.cut()  # the gateway's connections die ...
        front.retarget(survivor.host, survivor.port)  # ... and the front door routes elsewhere
        await front.restore()
        await doomed.close()
        assert await asyncio.wait_for(chat, timeout=20) == answer(tokens_total)
    finally:
        await front.close()
    assert stats.generations_started == 1


async def test_client_gone_while_queued_resumes_once_a_worker_takes_it_up(
    gateway_factory: Any, worker_factory: Any, simulator: Any, keys: KeyPair
) -> None:
    """The client leaves while its request still waits in the queue (its cancel marker names when
    the grace period ends); a worker that takes it up within the grace period runs it, and the
    client's resume gets the whole answer."""
    gateway = await gateway_factory(RESUME_GRACE_SECONDS="30")
    token = keys.mint("u")
    response = await gateway.post(
        "/chat", json={"session_id": "s", "prompt": PROMPT}, headers=auth_header(token)
    )
    request_id = response.headers["X-Chat-Request-Id"]
    await response.content.readline()  # the stream is open (the first heartbeat)
    response.close()
    await asyncio.sleep(0.3)  # the gateway noticed and left its (graced) cancel marker
    simulator.app[SIM_STATE].config = SimulatorConfig(ttft_ms=5, tokens_per_second=40, answer_tokens=60)
    await worker_factory()

    async def generating() -> bool:
        return bool(simulator.app[SIM_STATE].stats.in_flight == 1)

    await wait_for(generating)
    events = await read_sse(await resume(gateway, request_id, token, None))
    check_ids(events, 0)
    assert events[-1].event == "done"
    assert text_of(events) == answer(60)


async def test_a_last_event_id_that_is_not_ascii_digits_is_400(
    gateway: Any, worker: Any, keys: KeyPair
) -> None:
    """Found by the fuzzer: ``str.isdigit`` accepts superscripts and other scripts' digits."""
    token = keys.mint("owner")
    response = await gateway.post(
        "/chat", json={"session_id": "s", "prompt": PROMPT}, headers=auth_header(token)
    )
    await read_sse(response)
    request_id = response.headers["X-Chat-Request-Id"]
    for bad in (
        "\u0663",
        "\u00b2",
        "-1",
        "1e3",
        "1234567890",
        "",
        " ",
    ):  # Arabic-Indic 3, superscript 2, sign, exponent, too long, empty, blank (also found by it)
        headers = {**auth_header(token), "Last-Event-ID": bad}
        refused = await gateway.get(f"/chat/{request_id}/events", headers=headers)
        assert refused.status == 400, bad
        assert (await refused.json())["error"] == "invalid_last_event_id"
