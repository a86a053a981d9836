"""The Ollama-API simulator speaks Ollama's wire format and counts what happened to each generation."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp.test_utils import TestClient
from helpers import wait_for
from pytest_aiohttp import AiohttpClient, AiohttpServer

from inference_worker.simulator import (
    BUSY_ERROR,
    SimulatorConfig,
    create_simulator_app,
    expected_answer,
    expected_tokens,
)

MakeClient = Callable[..., Awaitable[TestClient[Any, Any]]]
FINAL_FIELDS = (
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
)
HELLO = [{"role": "user", "content": "Hello there"}]


@pytest.fixture
def make_client(aiohttp_client: AiohttpClient) -> MakeClient:
    """A test client for a simulator that streams instantly unless told otherwise."""

    async def make(**overrides: Any) -> TestClient[Any, Any]:
        knobs: dict[str, Any] = {"ttft_ms": 0, "tokens_per_second": 0, "answer_tokens": 8, **overrides}
        return await aiohttp_client(create_simulator_app(SimulatorConfig(**knobs)))

    return make


def ndjson(body: bytes) -> list[dict[str, Any]]:
    return [msgspec.json.decode(line) for line in body.splitlines()]


async def chat(client: TestClient[Any, Any], messages: list[dict[str, str]], **extra: Any) -> Any:
    resp = await client.post("/api/chat", json={"model": "llama3.2", "messages": messages, **extra})
    assert resp.status == 200, await resp.text()
    if extra.get("stream") is False:
        return await resp.json()
    return ndjson(await resp.read())


async def stats(client: TestClient[Any, Any] | aiohttp.ClientSession, base: str = "") -> dict[str, int]:
    async with client.get(f"{base}/sim/stats") as resp:
        result: dict[str, int] = await resp.json()
        return result


async def wait_for_stats(
    client: TestClient[Any, Any] | aiohttp.ClientSession, key: str, value: int, base: str = ""
) -> dict[str, int]:
    current: dict[str, int] = {}

    async def reached() -> dict[str, int] | None:
        nonlocal current
        current = await stats(client, base)
        return current if current[key] == value else None

    return await wait_for(
        reached, timeout=10, interval=0.02, what=f"{key} == {value}", details=lambda: f"{current}"
    )


async def test_stream_lines_and_final_usage_follow_ollama(make_client: MakeClient) -> None:
    client = await make_client()
    resp = await client.post("/api/chat", json={"model": "llama3.2", "messages": HELLO})
    assert resp.status == 200
    assert resp.content_type == "application/x-ndjson"
    lines = ndjson(await resp.read())

    *tokens, final = lines
    assert len(tokens) == 8
    for line in tokens:
        assert set(line) == {"model", "created_at", "message", "done"}
        assert line["model"] == "llama3.2"
        assert line["done"] is False
        assert line["message"]["role"] == "assistant"
        assert datetime.fromisoformat(line["created_at"]).tzinfo is not None
    assert "".join(t["message"]["content"] for t in tokens) == expected_answer("llama3.2", HELLO, 8)
    assert final["done"] is True
    assert final["done_reason"] == "stop"
    assert final["message"] == {"role": "assistant", "content": ""}
    assert all(isinstance(final[name], int) and final[name] > 0 for name in FINAL_FIELDS)
    assert final["eval_count"] == 8
    assert final["total_duration"] >= final["prompt_eval_duration"] + final["eval_duration"]


async def test_non_streaming_answer_equals_the_concatenated_stream(make_client: MakeClient) -> None:
    client = await make_client()
    streamed = await chat(client, HELLO)
    whole = await chat(client, HELLO, stream=False)
    assert whole["message"] == {
        "role": "assistant",
        "content": "".join(line["message"]["content"] for line in streamed),
    }
    assert whole["done"] is True
    assert whole["done_reason"] == "stop"
    assert {name: whole[name] for name in ("eval_count", "prompt_eval_count")} == {
        name: streamed[-1][name] for name in ("eval_count", "prompt_eval_count")
    }
    assert all(isinstance(whole[name], int) and whole[name] > 0 for name in FINAL_FIELDS)


def test_answer_is_a_pure_function_of_model_and_messages() -> None:
    tokens = expected_tokens("llama3.2", HELLO, 24)
    assert tokens == expected_tokens("llama3.2", HELLO, 24)
    assert expected_answer("llama3.2", HELLO, 24) == "".join(tokens)
    assert expected_answer("llama3.2:latest", HELLO, 24) == "".join(tokens)
    assert len(tokens) == 24
    assert all(token.startswith(" ") for token in tokens)
    assert expected_answer("qwen2.5", HELLO, 24) != "".join(tokens)
    assert expected_answer("llama3.2", [{"role": "user", "content": "Hi"}], 24) != "".join(tokens)


async def test_unicode_prompt_round_trips(make_client: MakeClient) -> None:
    client = await make_client()
    messages = [{"role": "user", "content": "שלום עולם 👋🏽 — מה נשמע?"}]
    whole = await chat(client, messages, stream=False)
    assert whole["message"]["content"] == expected_answer("llama3.2", messages, 8)
    assert whole["prompt_eval_count"] > 0


@pytest.mark.parametrize(
    ("roles", "turns"),
    [
        (["user"], 0),
        (["system", "user"], 0),
        (["user", "assistant", "user"], 2),
        (["system", "user", "assistant", "user", "assistant", "user"], 4),
        (["user", "assistant", "user", "assistant"], 2),
    ],
)
async def test_first_token_counts_the_history_it_was_sent(
    make_client: MakeClient, roles: list[str], turns: int
) -> None:
    client = await make_client()
    messages = [{"role": role, "content": f"message {i}"} for i, role in enumerate(roles)]
    lines = await chat(client, messages)
    assert lines[0]["message"]["content"] == f" [turns={turns}]"
    assert expected_tokens("llama3.2", messages, 8)[0] == f" [turns={turns}]"


async def test_unknown_model_is_404_like_ollama(make_client: MakeClient) -> None:
    client = await make_client()
    resp = await client.post("/api/chat", json={"model": "mistral", "messages": HELLO})
    assert resp.status == 404
    assert await resp.json() == {"error": 'model "mistral" not found, try pulling it first'}
    resp = await client.post("/api/chat", json={"model": "llama3.2:latest", "messages": HELLO})
    assert resp.status == 200


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b'{"model": "llama3.2"}',
        b'{"messages": [{"role": "user", "content": "hi"}]}',
        b'{"model": "llama3.2", "messages": "hi"}',
        b"[]",
    ],
)
async def test_bad_requests_are_400_with_an_error_body(make_client: MakeClient, body: bytes) -> None:
    client = await make_client()
    resp = await client.post("/api/chat", data=body, headers={"Content-Type": "application/json"})
    assert resp.status == 400
    error = await resp.json()
    assert set(error) == {"error"}
    assert error["error"]


async def test_empty_messages_load_the_model_like_ollama(make_client: MakeClient) -> None:
    client = await make_client()
    resp = await client.post("/api/chat", json={"model": "llama3.2", "messages": []})
    assert resp.status == 200
    body = await resp.json()
    assert body["done"] is True
    assert body["done_reason"] == "load"
    assert (await stats(client))["generations_started"] == 0


async def test_num_predict_truncates_with_done_reason_length(make_client: MakeClient) -> None:
    client = await make_client()
    whole = await chat(client, HELLO, stream=False, options={"num_predict": 3})
    assert whole["done_reason"] == "length"
    assert whole["eval_count"] == 3
    assert whole["message"]["content"] == "".join(expected_tokens("llama3.2", HELLO, 8)[:3])


async def test_503_when_more_than_max_queue_generations_are_in_flight(make_client: MakeClient) -> None:
    client = await make_client(max_queue=1, tokens_per_second=50, answer_tokens=10_000)
    first = await client.post("/api/chat", json={"model": "llama3.2", "messages": HELLO})
    assert first.status == 200
    await first.content.readline()  # the generation is now under way

    second = await client.post("/api/chat", json={"model": "qwen2.5", "messages": HELLO})
    assert second.status == 503
    assert await second.json() == {"error": BUSY_ERROR}

    first.close()
    current = await wait_for_stats(client, "in_flight", 0)
    assert current["requests_rejected"] == 1
    assert current["generations_started"] == 1


async def test_fail_after_tokens_sends_an_error_line_mid_stream(make_client: MakeClient) -> None:
    client = await make_client(fail_after_tokens=3)
    resp = await client.post("/api/chat", json={"model": "llama3.2", "messages": HELLO})
    assert resp.status == 200
    *tokens, error = ndjson(await resp.read())
    assert [t["message"]["content"] for t in tokens] == expected_tokens("llama3.2", HELLO, 8)[:3]
    assert set(error) == {"error"}
    current = await stats(client)
    assert (current["generations_failed"], current["generations_completed"], current["in_flight"]) == (
        1,
        0,
        0,
    )


@pytest.mark.parametrize("stream", [True, False])
async def test_failure_before_any_output_gets_a_real_status(make_client: MakeClient, stream: bool) -> None:
    client = await make_client(fail_after_tokens=0)
    resp = await client.post("/api/chat", json={"model": "llama3.2", "messages": HELLO, "stream": stream})
    assert resp.status == 500
    assert set(await resp.json()) == {"error"}


async def test_client_disconnect_stops_the_generation_and_counts_an_abort(
    aiohttp_server: AiohttpServer,
) -> None:
    # TestServer always runs with handler_cancellation=True, as __main__ does.
    app = create_simulator_app(SimulatorConfig(ttft_ms=0, tokens_per_second=50, answer_tokens=10_000))
    server = await aiohttp_server(app)
    base = str(server.make_url(""))
    async with aiohttp.ClientSession() as session:
        resp = await session.post(f"{base}/api/chat", json={"model": "llama3.2", "messages": HELLO})
        for _ in range(3):
            assert msgspec.json.decode(await resp.content.readline())["done"] is False
        resp.close()

        current = await wait_for_stats(session, "generations_aborted", 1, base)
        assert current["generations_completed"] == 0
        assert current["in_flight"] == 0
        tokens_when_aborted = current["tokens_generated"]
        await asyncio.sleep(0.1)
        assert (await stats(session, base))["tokens_generated"] == tokens_when_aborted


async def test_info_endpoints_answer_like_ollama(make_client: MakeClient) -> None:
    client = await make_client()
    resp = await client.get("/")
    assert await resp.text() == "Ollama is running"
    version = await (await client.get("/api/version")).json()
    assert version["version"].endswith("-sim")

    tags = await (await client.get("/api/tags")).json()
    assert [m["name"] for m in tags["models"]] == ["llama3.2:latest", "qwen2.5:latest"]
    for model in tags["models"]:
        assert {"name", "model", "modified_at", "size", "digest", "details"} <= set(model)
        assert model["details"]["format"] == "gguf"

    assert await (await client.get("/api/ps")).json() == {"models": []}
    await chat(client, HELLO)
    running = (await (await client.get("/api/ps")).json())["models"]
    assert [m["name"] for m in running] == ["llama3.2:latest"]
    assert datetime.fromisoformat(running[0]["expires_at"]) > datetime.fromisoformat(
        tags["models"][0]["modified_at"]
    )


async def test_stats_count_generations_and_reset_zeroes_them(make_client: MakeClient) -> None:
    client = await make_client()
    await chat(client, HELLO)
    await chat(client, HELLO, stream=False)
    assert await stats(client) == {
        "generations_started": 2,
        "generations_completed": 2,
        "generations_aborted": 0,
        "generations_failed": 0,
        "requests_rejected": 0,
        "tokens_generated": 16,
        "in_flight": 0,
    }
    resp = await client.post("/sim/reset")
    assert resp.status == 200
    assert set((await stats(client)).values()) == {0}


async def test_config_changes_apply_to_later_generations(make_client: MakeClient) -> None:
    client = await make_client()
    resp = await client.post("/sim/config", json={"answer_tokens": 3, "ttft_ms": 1, "tokens_per_second": 500})
    assert resp.status == 200
    assert (await resp.json())["answer_tokens"] == 3
    lines = await chat(client, HELLO)
    assert [line["message"]["content"] for line in lines[:-1]] == expected_tokens("llama3.2", HELLO, 3)

    resp = await client.post("/sim/config", json={"fail_after_tokens": 1})
    assert resp.status == 200
    assert "error" in (await chat(client, HELLO))[-1]
    resp = await client.post("/sim/config", json={"fail_after_tokens": None})
    assert (await chat(client, HELLO))[-1]["done"] is True

    for bad in ({"answer_tokens": 0}, {"answer_tokens": "many"}, {"colour": "red"}):
        resp = await client.post("/sim/config", json=bad)
        assert resp.status == 400, bad
    config = await (await client.get("/sim/config")).json()
    assert (config["answer_tokens"], config["fail_after_tokens"]) == (3, None)


async def test_metrics_endpoint_exports_the_counters(aiohttp_client: Any) -> None:
    client = await aiohttp_client(
        create_simulator_app(SimulatorConfig(ttft_ms=0, tokens_per_second=0, answer_tokens=5))
    )
    response = await client.post(
        "/api/chat",
        json={"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": False},
    )
    assert response.status == 200
    text = await (await client.get("/metrics")).text()
    assert 'simulator_generations_total{outcome="completed"} 1.0' in text
    assert "simulator_tokens_generated_total 5.0" in text
    assert "simulator_in_flight 0.0" in text


async def test_stop_sequences_end_the_answer_before_them(make_client: MakeClient) -> None:
    client = await make_client()
    full = "".join(expected_tokens("llama3.2", HELLO, 8))
    word = full.split()[3]
    for stop in (word, [word, "never-generated"]):
        whole = await chat(client, HELLO, stream=False, options={"stop": stop})
        assert whole["done_reason"] == "stop"
        assert whole["message"]["content"] == full[: full.index(word)]
    untouched = await chat(client, HELLO, stream=False, options={"stop": ["never-generated"]})
    assert untouched["message"]["content"] == full


async def test_a_configured_answer_text_is_streamed_word_by_word_exactly(make_client: MakeClient) -> None:
    text = "Look: <img src=x onerror=alert(1)>\n\n```js\nlet  a = 1;\n```\n"
    client = await make_client()
    resp = await client.post("/sim/config", json={"answer_text": text})
    assert resp.status == 200, await resp.text()
    *tokens, final = await chat(client, HELLO)
    contents = [t["message"]["content"] for t in tokens]
    assert "".join(contents) == text
    assert contents[:2] == ["Look: ", "<img "]
    assert final["eval_count"] == len(contents)
    whole = await chat(client, HELLO, stream=False)
    assert whole["message"]["content"] == text
