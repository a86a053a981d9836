"""Tool calls in a session: recorded with the assistant turn, replayed to the model as Ollama
expects, returned by the session read API (gateway + worker + simulator, real Redis and RabbitMQ)."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import openai
from helpers import WEATHER, KeyPair, auth_header, simulator_url

QUESTION = "Please call get_weather for Paris"


def client_for(gateway: Any, token: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=str(gateway.make_url("/v1")), api_key=token, max_retries=0, timeout=30)


async def received_chats(simulator: Any) -> list[dict[str, Any]]:
    """The /api/chat bodies the simulator received (its /sim/chats), oldest first."""
    async with aiohttp.ClientSession() as http, http.get(f"{simulator_url(simulator)}/sim/chats") as response:
        assert response.status == 200
        chats: list[dict[str, Any]] = await response.json()
        return chats


async def test_a_tool_call_is_kept_in_the_session_and_replayed_to_the_model(
    gateway: Any, worker: Any, simulator: Any, keys: KeyPair
) -> None:
    token = keys.mint("tooluser")
    session = {"session_id": "tools-1"}
    messages: list[Any] = [{"role": "user", "content": QUESTION}]
    async with client_for(gateway, token) as client:
        first = await client.chat.completions.create(
            model="llama3.2",
            messages=messages,
            tools=[WEATHER],  # type: ignore[list-item]
            extra_body=session,
        )
        assert first.choices[0].finish_reason == "tool_calls"
        (call,) = first.choices[0].message.tool_calls or []
        arguments = json.loads(call.function.arguments)  # type: ignore[union-attr]

        # The session's assistant turn is the tool call, not an empty answer.
        read = await gateway.get("/sessions/tools-1", headers=auth_header(token))
        assert read.status == 200
        turns = (await read.json())["turns"]
        assert [(t["role"], t["content"]) for t in turns] == [("user", QUESTION), ("assistant", "")]
        assert turns[1]["tool_calls"] == [
            {"function": {"name": "get_weather", "arguments": arguments}, "id": call.id}
        ]

        # The client answers the call (OpenAI style): the tool result is this exchange's turn.
        messages += [
            first.choices[0].message,
            {"role": "tool", "tool_call_id": call.id, "content": "21 degrees"},
        ]
        second = await client.chat.completions.create(
            model="llama3.2",
            messages=messages,
            tools=[WEATHER],  # type: ignore[list-item]
            extra_body=session,
        )
        answer = second.choices[0].message.content
        assert second.choices[0].finish_reason == "stop" and answer

    # A follow-up on the session's history (/chat): the model is sent the call and its result.
    follow_up = await gateway.post(
        "/chat",
        json={"session_id": "tools-1", "prompt": "and tomorrow?", "stream": False},
        headers=auth_header(token),
    )
    assert follow_up.status == 200, await follow_up.text()
    sent = (await received_chats(simulator))[-1]["messages"]
    assert sent == [
        {"role": "user", "content": QUESTION},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": arguments}}],
        },
        {"role": "tool", "content": "21 degrees", "tool_name": "get_weather"},
        {"role": "assistant", "content": answer},
        {"role": "user", "content": "and tomorrow?"},
    ]

    turns = (await (await gateway.get("/sessions/tools-1", headers=auth_header(token))).json())["turns"]
    assert [t["role"] for t in turns] == ["user", "assistant", "tool", "assistant", "user", "assistant"]
    assert turns[2] == {
        "role": "tool",
        "content": "21 degrees",
        "tool_name": "get_weather",
        "created_at": turns[2]["created_at"],
    }
    assert "tool_calls" not in turns[3] and "tool_calls" not in turns[5]
