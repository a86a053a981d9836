"""The simulator's tools, ``format``, generate, show and embeddings, read by the official
``ollama`` client (Ollama's wire format as its own client parses it) and checked with jsonschema."""

from __future__ import annotations

import json
import math
import random
from collections.abc import AsyncIterator
from typing import Any

import jsonschema
import ollama
import pytest
from aiohttp.test_utils import TestServer
from helpers import simulator_url, start_server

from inference_worker.simulator import SimulatorConfig, create_simulator_app
from inference_worker.simulator_structured import embedding, schema_value, tool_calls_for

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
            },
            "required": ["city", "days"],
        },
    },
}
PYDANTIC_STYLE = {
    "$defs": {
        "Address": {
            "type": "object",
            "properties": {"street": {"type": "string"}, "zip": {"type": "string", "minLength": 5}},
            "required": ["street", "zip"],
            "additionalProperties": False,
        }
    },
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "kind": {"enum": ["a", "b"]},
        "home": {"$ref": "#/$defs/Address"},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 3},
        "nickname": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "active": {"type": "boolean"},
        "born": {"type": "string", "format": "date"},
    },
    "required": ["name", "score", "kind", "home", "tags", "nickname", "active", "born"],
    "additionalProperties": False,
}


@pytest.fixture
async def client() -> AsyncIterator[ollama.AsyncClient]:
    config = SimulatorConfig(ttft_ms=0, tokens_per_second=0, answer_tokens=8, embedding_dimensions=16)
    server: TestServer = await start_server(create_simulator_app(config))
    client = ollama.AsyncClient(host=simulator_url(server))
    yield client
    await client.close()
    await server.close()


@pytest.mark.parametrize("seed", range(20))
def test_schema_values_conform(seed: int) -> None:
    value = schema_value(PYDANTIC_STYLE, random.Random(seed))
    jsonschema.validate(value, PYDANTIC_STYLE)
    jsonschema.validate(
        schema_value(WEATHER["function"]["parameters"], random.Random(seed)),
        WEATHER["function"]["parameters"],
    )  # type: ignore[index]


def test_tool_calls_only_when_asked_and_not_after_a_result() -> None:
    asked = [{"role": "user", "content": "What does Get Weather say?"}]
    calls = tool_calls_for([WEATHER], asked, "llama3.2:latest")
    assert [c["function"]["name"] for c in calls] == ["get_weather"]
    assert calls == tool_calls_for([WEATHER], asked, "llama3.2:latest")  # deterministic
    assert tool_calls_for([WEATHER], [{"role": "user", "content": "hello"}], "llama3.2:latest") == []
    after = [*asked, {"role": "assistant", "content": ""}, {"role": "tool", "content": "sunny"}]
    assert tool_calls_for([WEATHER], after, "llama3.2:latest") == []


async def test_tools_in_ollamas_format(client: ollama.AsyncClient) -> None:
    messages = [{"role": "user", "content": "call get_weather please"}]
    whole = await client.chat(model="llama3.2", messages=messages, tools=[WEATHER])
    calls = whole.message.tool_calls or []
    assert [c.function.name for c in calls] == ["get_weather"] and whole.message.content == ""
    # The client passes the parameters on without numeric bounds (its Tool model has none).
    sent = {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}}
    jsonschema.validate(dict(calls[0].function.arguments), {**sent, "required": ["city", "days"]})
    parts = [
        p async for p in await client.chat(model="llama3.2", messages=messages, tools=[WEATHER], stream=True)
    ]
    streamed = [c for p in parts for c in p.message.tool_calls or ()]
    assert [c.model_dump() for c in streamed] == [c.model_dump() for c in calls]
    assert not parts[-1].message.tool_calls and parts[-1].done  # the calls come before the last line
    plain = await client.chat(model="llama3.2", messages=[{"role": "user", "content": "hi"}], tools=[WEATHER])
    assert plain.message.content and not plain.message.tool_calls


async def test_format_json_and_schema(client: ollama.AsyncClient) -> None:
    messages = [{"role": "user", "content": "describe"}]
    any_json = await client.chat(model="llama3.2", messages=messages, format="json")
    assert isinstance(json.loads(any_json.message.content or ""), dict)
    parts = [
        p
        async for p in await client.chat(
            model="llama3.2", messages=messages, format=PYDANTIC_STYLE, stream=True
        )
    ]
    text = "".join(p.message.content or "" for p in parts)
    assert len(parts) > 2  # streamed in pieces, like a model's tokens
    jsonschema.validate(json.loads(text), PYDANTIC_STYLE)
    again = await client.chat(model="llama3.2", messages=messages, format=PYDANTIC_STYLE)
    assert again.message.content == text  # deterministic


async def test_generate_show_and_embed(client: ollama.AsyncClient) -> None:
    generated = await client.generate(model="llama3.2", prompt="why", system="be brief")
    assert generated.response and generated.done and generated.eval_count == 8
    parts = [
        p async for p in await client.generate(model="llama3.2", prompt="why", system="be brief", stream=True)
    ]
    assert "".join(p.response for p in parts) == generated.response
    shaped = await client.generate(model="llama3.2", prompt="why", format=WEATHER["function"]["parameters"])  # type: ignore[index]
    jsonschema.validate(json.loads(shaped.response), WEATHER["function"]["parameters"])  # type: ignore[index]
    shown = await client.show("llama3.2")
    assert shown.capabilities and "tools" in shown.capabilities and shown.details.family == "llama"  # type: ignore[union-attr]
    embedded = await client.embed(model="llama3.2", input=["one", "two"])
    assert embedded.embeddings == [embedding("llama3.2:latest", t, 16) for t in ("one", "two")]
    assert all(math.isclose(sum(x * x for x in v), 1.0) for v in embedded.embeddings)
    short = await client.embed(model="llama3.2", input="one", dimensions=4)
    assert len(short.embeddings[0]) == 4 and math.isclose(sum(x * x for x in short.embeddings[0]), 1.0)
    legacy = await client.embeddings(model="llama3.2", prompt="one")
    assert list(legacy.embedding) == embedded.embeddings[0]
    with pytest.raises(ollama.ResponseError) as missing:
        await client.embed(model="nope", input="x")
    assert missing.value.status_code == 404


async def test_tool_results_reach_the_model_as_messages(client: ollama.AsyncClient) -> None:
    """A conversation with a tool call and its result is answered, and counted as turns."""
    messages: list[Any] = [
        {"role": "user", "content": "call get_weather"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "x", "days": 1}}}],
        },
        {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
    ]
    answer = await client.chat(model="llama3.2", messages=messages, tools=[WEATHER])
    assert answer.message.content and not answer.message.tool_calls
