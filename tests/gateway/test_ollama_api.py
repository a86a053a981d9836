"""Ollama's API on the gateway, driven by the official ``ollama`` client (and raw requests where
the wire matters), against gateway + worker + simulator on the real broker and Redis."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import AsyncIterator, Callable
from typing import Any

import ollama
import openai
import pytest
from helpers import WEATHER, KeyPair, auth_header, wait_for

from inference_worker.simulator import STATE_KEY as SIM_STATE
from inference_worker.simulator_structured import embedding
from inference_worker.simulator_text import expected_answer

ClientFor = Callable[[Any, str], ollama.AsyncClient]


@pytest.fixture
async def client_for() -> AsyncIterator[ClientFor]:
    """Official clients with a bearer header, closed after the test."""
    clients: list[ollama.AsyncClient] = []

    def make(gateway: Any, token: str) -> ollama.AsyncClient:
        client = ollama.AsyncClient(
            host=str(gateway.make_url("")), headers={"Authorization": f"Bearer {token}"}
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


async def test_list_show_version_ps(gateway: Any, worker: Any, keys: KeyPair, client_for: ClientFor) -> None:
    client = client_for(gateway, keys.mint("ol"))
    names = [m.model for m in (await client.list()).models]
    assert sorted(names) == ["llama3.2:latest", "qwen2.5:latest"]
    shown = await client.show("llama3.2")
    assert shown.capabilities is not None and "tools" in shown.capabilities
    assert [m.model for m in (await client.ps()).models] == names
    with pytest.raises(ollama.ResponseError) as missing:
        await client.show("no-such-model")
    assert missing.value.status_code == 404
    version = await gateway.get("/api/version", headers=auth_header(keys.mint("ol")))
    assert (await version.json())["version"]


async def test_chat_streamed_and_not(gateway: Any, worker: Any, keys: KeyPair, client_for: ClientFor) -> None:
    client = client_for(gateway, keys.mint("ol"))
    messages = [{"role": "user", "content": "hello ollama"}]
    whole = await client.chat(model="llama3.2", messages=messages)
    assert whole.message.content == expected_answer("llama3.2", messages, 24)
    assert whole.done and whole.eval_count == 24 and whole.done_reason == "stop"
    parts = [part async for part in await client.chat(model="llama3.2", messages=messages, stream=True)]
    assert "".join(p.message.content or "" for p in parts) == whole.message.content
    assert parts[-1].done and parts[-1].eval_count == 24
    short = await client.chat(model="llama3.2", messages=messages, options={"num_predict": 2})
    assert short.eval_count == 2 and short.done_reason == "length"


async def test_generate_streamed_and_not(
    gateway: Any, worker: Any, keys: KeyPair, client_for: ClientFor
) -> None:
    client = client_for(gateway, keys.mint("ol"))
    expected = expected_answer(
        "llama3.2", [{"role": "system", "content": "be brief"}, {"role": "user", "content": "why"}], 24
    )
    whole = await client.generate(model="llama3.2", prompt="why", system="be brief")
    assert whole.response == expected and whole.done
    parts = [
        p async for p in await client.generate(model="llama3.2", prompt="why", system="be brief", stream=True)
    ]
    assert "".join(p.response for p in parts) == expected
    assert parts[-1].done and parts[-1].eval_count == 24


async def test_tools_and_format(gateway: Any, worker: Any, keys: KeyPair, client_for: ClientFor) -> None:
    client = client_for(gateway, keys.mint("ol"))
    asked = [{"role": "user", "content": "call get_weather for Lima"}]
    whole = await client.chat(model="llama3.2", messages=asked, tools=[WEATHER])
    calls = whole.message.tool_calls or []
    assert [c.function.name for c in calls] == ["get_weather"]
    assert isinstance(calls[0].function.arguments["city"], str)
    streamed = [
        p async for p in await client.chat(model="llama3.2", messages=asked, tools=[WEATHER], stream=True)
    ]
    assert [c.function.name for p in streamed for c in p.message.tool_calls or ()] == ["get_weather"]
    follow_up = [
        *asked,
        {"role": "assistant", "content": "", "tool_calls": [c.model_dump() for c in calls]},
        {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
    ]
    answer = await client.chat(model="llama3.2", messages=follow_up, tools=[WEATHER])
    assert answer.message.content and not answer.message.tool_calls
    schema = {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}
    shaped = await client.chat(
        model="llama3.2", messages=[{"role": "user", "content": "age?"}], format=schema
    )
    assert isinstance(json.loads(shaped.message.content or "")["age"], int)


async def test_embed_batches_and_counts_usage(
    gateway: Any, worker: Any, keys: KeyPair, client_for: ClientFor
) -> None:
    client = client_for(gateway, keys.mint("ol"))
    texts = ["first text", "second longer text"]
    result = await client.embed(model="llama3.2", input=texts)
    assert result.embeddings == [embedding("llama3.2:latest", t, 64) for t in texts]
    assert result.prompt_eval_count and result.prompt_eval_count > 0
    legacy = await client.embeddings(model="llama3.2", prompt="first text")
    assert list(legacy.embedding) == result.embeddings[0]
    token = keys.mint("oa")
    async with openai.AsyncOpenAI(base_url=str(gateway.make_url("/v1")), api_key=token, max_retries=0) as oa:
        created = await oa.embeddings.create(model="llama3.2", input=texts)  # base64 on the wire
        assert [d.index for d in created.data] == [0, 1]
        assert all(
            math.isclose(a, b, rel_tol=1e-6)
            for a, b in zip(created.data[1].embedding, result.embeddings[1], strict=True)
        )
        assert created.usage.prompt_tokens == result.prompt_eval_count
        floats = await oa.embeddings.create(
            model="llama3.2", input="first text", encoding_format="float", dimensions=8
        )
        assert len(floats.data[0].embedding) == 8


async def test_errors_in_ollama_shape(
    gateway: Any, worker: Any, keys: KeyPair, client_for: ClientFor
) -> None:
    token = keys.mint("ol")
    client = client_for(gateway, token)
    with pytest.raises(ollama.ResponseError) as missing:
        await client.chat(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert missing.value.status_code == 404 and "not found" in missing.value.error
    with pytest.raises(ollama.ResponseError) as denied:
        await client.pull("llama3.2")
    assert denied.value.status_code == 403
    unauthenticated = await gateway.get("/api/tags")
    assert unauthenticated.status == 401
    body = await unauthenticated.json()
    assert isinstance(body["error"], str) and body["code"] == "missing_token"
    odd = await gateway.post(
        "/api/chat",
        json={
            "model": "llama3.2",
            "messages": [{"role": "user", "content": "x"}],
            "options": {"mirostat": 2},
        },
        headers=auth_header(token),
    )
    assert odd.status == 400 and (await odd.json())["code"] == "unsupported_parameter"


async def test_session_and_rate_limit_apply(
    gateway_factory: Any, worker: Any, keys: KeyPair, client_for: ClientFor
) -> None:
    gateway = await gateway_factory(RATE_LIMIT_PER_MINUTE="2")
    token = keys.mint("limited")
    body = {"model": "llama3.2", "messages": [{"role": "user", "content": "keep me"}], "stream": False}
    first = await gateway.post("/api/chat", json={**body, "session_id": "ol-s1"}, headers=auth_header(token))
    assert first.status == 200 and first.headers["RateLimit-Limit"] == "2"
    session = await (await gateway.get("/sessions/ol-s1", headers=auth_header(token))).json()
    assert [t["content"] for t in session["turns"] if t["role"] == "user"] == ["keep me"]
    await gateway.post("/api/embed", json={"model": "llama3.2", "input": "x"}, headers=auth_header(token))
    limited = await gateway.post(
        "/api/generate", json={"model": "llama3.2", "prompt": "x"}, headers=auth_header(token)
    )
    assert limited.status == 429 and "Retry-After" in limited.headers


async def test_leaving_an_ollama_stream_cancels_the_generation(
    gateway: Any, worker: Any, simulator: Any, keys: KeyPair
) -> None:
    state = simulator.app[SIM_STATE]
    state.config = dataclasses.replace(state.config, tokens_per_second=40, answer_tokens=400)
    response = await gateway.post(
        "/api/chat",
        json={"model": "llama3.2", "messages": [{"role": "user", "content": "a long answer"}]},
        headers=auth_header(keys.mint("leaver")),
    )
    assert response.headers["Content-Type"].startswith("application/x-ndjson")
    opening = json.loads(await response.content.readline())  # the heartbeat: no text yet
    assert opening["done"] is False and opening["message"] == {"role": "assistant", "content": ""}
    first = json.loads(await response.content.readline())
    assert first["done"] is False and first["message"]["content"]
    response.close()

    async def aborted() -> bool:
        return bool(state.stats.generations_aborted == 1 and state.stats.in_flight == 0)

    await wait_for(aborted)
    assert state.stats.generations_completed == 0
    await worker.run_until_idle(timeout=15)


async def test_what_the_model_node_refuses_is_the_callers_error(
    gateway: Any, worker: Any, keys: KeyPair, client_for: ClientFor
) -> None:
    """Ollama's 400 (here: more dimensions than the model has) is a 400 for the caller, not a 502."""
    with pytest.raises(ollama.ResponseError) as refused:
        await client_for(gateway, keys.mint("ol")).embed(model="llama3.2", input="x", dimensions=10_000)
    assert refused.value.status_code == 400 and "dimensions" in refused.value.error
