"""Tools, structured output and parameter refusals through the OpenAI API, driven by the official
``openai`` client and ``langchain-openai`` against gateway + worker + simulator."""

from __future__ import annotations

import json
from typing import Any

import openai
import pydantic
import pytest
from helpers import KeyPair, auth_header
from langchain_core.messages import HumanMessage
from langchain_openai import ChatOpenAI

from inference_worker.simulator_text import expected_answer

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
        },
    },
}


def client_for(gateway: Any, token: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=str(gateway.make_url("/v1")), api_key=token, max_retries=0, timeout=30)


async def test_tool_call_round_trip(gateway: Any, worker: Any, keys: KeyPair) -> None:
    """call -> tool message -> answer, with the SDK's own objects sent back."""
    messages: list[Any] = [{"role": "user", "content": "Please call get_weather for Paris"}]
    async with client_for(gateway, keys.mint("tools")) as client:
        first = await client.chat.completions.create(model="llama3.2", messages=messages, tools=[WEATHER])  # type: ignore[list-item]
        choice = first.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert choice.message.tool_calls is not None and len(choice.message.tool_calls) == 1
        call = choice.message.tool_calls[0]
        assert call.type == "function" and call.function.name == "get_weather"  # type: ignore[union-attr]
        arguments = json.loads(call.function.arguments)  # type: ignore[union-attr]
        assert set(arguments) == {"city", "unit"} and arguments["unit"] in {"celsius", "fahrenheit"}
        messages += [choice.message, {"role": "tool", "tool_call_id": call.id, "content": "21 degrees"}]
        second = await client.chat.completions.create(model="llama3.2", messages=messages, tools=[WEATHER])  # type: ignore[list-item]
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.tool_calls is None
    assert second.choices[0].message.content


async def test_tool_calls_stream_as_deltas(gateway: Any, worker: Any, keys: KeyPair) -> None:
    async with client_for(gateway, keys.mint("tools")) as client:
        stream = await client.chat.completions.create(
            model="llama3.2",
            messages=[{"role": "user", "content": "use get_weather for Oslo"}],
            tools=[WEATHER],  # type: ignore[list-item]
            stream=True,
        )
        chunks = [chunk async for chunk in stream]
    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or ()]
    assert [d.function.name for d in deltas if d.function] == ["get_weather"]
    assert deltas[0].index == 0 and deltas[0].id
    assert json.loads(deltas[0].function.arguments or "")["unit"] in {"celsius", "fahrenheit"}  # type: ignore[union-attr]
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["tool_calls"]


async def test_tool_choice_none_withholds_tools(gateway: Any, worker: Any, keys: KeyPair) -> None:
    messages = [{"role": "user", "content": "call get_weather"}]
    async with client_for(gateway, keys.mint("tools")) as client:
        answer = await client.chat.completions.create(
            model="llama3.2",
            messages=messages,  # type: ignore[arg-type]
            tools=[WEATHER],  # type: ignore[list-item]
            tool_choice="none",
        )
    assert answer.choices[0].message.content == expected_answer("llama3.2", messages, 24)


class Person(pydantic.BaseModel):
    name: str
    age: int
    tags: list[str]


async def test_json_schema_response_is_parsed_by_the_sdk(gateway: Any, worker: Any, keys: KeyPair) -> None:
    async with client_for(gateway, keys.mint("schema")) as client:
        parsed = await client.chat.completions.parse(
            model="llama3.2",
            messages=[{"role": "user", "content": "Describe a person"}],
            response_format=Person,
        )
        person = parsed.choices[0].message.parsed
        assert isinstance(person, Person) and person.tags
        obj = await client.chat.completions.create(
            model="llama3.2",
            messages=[{"role": "user", "content": "JSON please"}],
            response_format={"type": "json_object"},
        )
    assert isinstance(json.loads(obj.choices[0].message.content or ""), dict)


async def test_langchain_bind_tools_and_structured_output(gateway: Any, worker: Any, keys: KeyPair) -> None:
    llm = ChatOpenAI(
        model="llama3.2",
        base_url=str(gateway.make_url("/v1")),
        api_key=keys.mint("lc"),
        max_retries=0,  # type: ignore[arg-type]
    )

    @pydantic.validate_call
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return "sunny"

    message = await llm.bind_tools([get_weather]).ainvoke([HumanMessage("call get_weather for Rome")])
    assert [call["name"] for call in message.tool_calls] == ["get_weather"]  # type: ignore[attr-defined]
    assert isinstance(message.tool_calls[0]["args"]["city"], str)  # type: ignore[attr-defined]
    person = await llm.with_structured_output(Person).ainvoke("describe someone")
    assert isinstance(person, Person)


@pytest.mark.parametrize(
    ("extra", "name"),
    [
        ({"logit_bias": {"42": 5}}, "logit_bias"),
        ({"logprobs": True}, "logprobs"),
        ({"n": 2}, "n"),
        ({"tool_choice": "required", "tools": [WEATHER]}, "tool_choice"),
        ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
        ({"no_such_parameter": 1}, "no_such_parameter"),
        ({"stream_options": {"include_usage": True, "bogus": 1}}, "stream_options.bogus"),
    ],
)
async def test_unsupported_parameters_are_refused_by_name(
    gateway: Any, worker: Any, keys: KeyPair, extra: dict[str, Any], name: str
) -> None:
    body = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], **extra}
    response = await gateway.post("/v1/chat/completions", json=body, headers=auth_header(keys.mint("p")))
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["code"] == "unsupported_parameter"
    assert repr(name) in error["message"]


async def test_chat_accepts_ollama_options(gateway: Any, worker: Any, keys: KeyPair) -> None:
    token = keys.mint("opts")
    body = {"session_id": "opt-1", "prompt": "short please", "stream": False, "options": {"num_predict": 3}}
    response = await gateway.post("/chat", json=body, headers=auth_header(token))
    assert response.status == 200, await response.text()
    answer = await response.json()
    assert answer["usage"]["completion_tokens"] == 3 and answer["done_reason"] == "length"
    for options, code in (
        ({"temperature": 9}, "invalid_parameter"),
        ({"mirostat": 1}, "unsupported_parameter"),
    ):
        refused = await gateway.post("/chat", json={**body, "options": options}, headers=auth_header(token))
        assert refused.status == 400
        assert (await refused.json())["error"] == code


async def test_models_are_listed_once_and_retrieved(gateway: Any, worker: Any, keys: KeyPair) -> None:
    async with client_for(gateway, keys.mint("models")) as client:
        ids = [m.id for m in (await client.models.list()).data]
        assert len(ids) == len(set(ids)) and not any(i.endswith(":latest") for i in ids)
        assert {"llama3.2", "qwen2.5"} <= set(ids)
        assert (await client.models.retrieve("llama3.2")).id == "llama3.2"
        assert (await client.models.retrieve("llama3.2:latest")).id == "llama3.2"
        with pytest.raises(openai.NotFoundError):
            await client.models.retrieve("no-such-model")


async def test_legacy_completions(gateway: Any, worker: Any, keys: KeyPair) -> None:
    expected = expected_answer("llama3.2", [{"role": "user", "content": "Say hello"}], 24)
    async with client_for(gateway, keys.mint("legacy")) as client:
        whole = await client.completions.create(model="llama3.2", prompt="Say hello", max_tokens=100)
        assert whole.object == "text_completion" and whole.choices[0].text == expected
        assert (
            whole.choices[0].finish_reason == "stop" and whole.usage and whole.usage.completion_tokens == 24
        )
        short = await client.completions.create(model="llama3.2", prompt="Say hello")  # max_tokens 16
        assert short.choices[0].finish_reason == "length" and expected.startswith(short.choices[0].text)
        stream = await client.completions.create(
            model="llama3.2", prompt="Say hello", max_tokens=100, stream=True
        )
        chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].text for c in chunks) == expected
    assert chunks[-1].choices[0].finish_reason == "stop"
