"""Tool calls survive the archive: the S3 document keeps an assistant turn's tool_calls and a tool
result's tool_name, the archived session reads back the same, and a resumed archived session
replays them to the model (gateway + worker + archiver + simulator, real Redis, RabbitMQ, S3)."""

from __future__ import annotations

from typing import Any

import aiohttp
from archive_support import chat, s3_objects
from helpers import KeyPair, auth_header, simulator_url

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


async def test_tool_calls_round_trip_through_the_archive(
    gateway: Any, worker: Any, simulator: Any, archiver_factory: Any, keys: KeyPair, base_env: dict[str, str]
) -> None:
    archiver = await archiver_factory(sweep=False)
    token = keys.mint("ivy")
    question = {"role": "user", "content": "call get_weather for Rome"}
    first = await gateway.post(
        "/v1/chat/completions",
        json={"model": "llama3.2", "messages": [question], "tools": [WEATHER], "session_id": "arch-tools"},
        headers=auth_header(token),
    )
    assert first.status == 200, await first.text()
    message = (await first.json())["choices"][0]["message"]
    (call,) = message["tool_calls"]
    result = {"role": "tool", "tool_call_id": call["id"], "content": "sunny"}
    second = await gateway.post(
        "/v1/chat/completions",
        json={
            "model": "llama3.2",
            "messages": [question, message, result],
            "tools": [WEATHER],
            "session_id": "arch-tools",
        },
        headers=auth_header(token),
    )
    assert second.status == 200, await second.text()
    live = (await (await gateway.get("/sessions/arch-tools", headers=auth_header(token))).json())["turns"]
    assert [t["role"] for t in live] == ["user", "assistant", "tool", "assistant"]

    assert (await gateway.post("/sessions/arch-tools/end", headers=auth_header(token))).status == 202
    await archiver.run_until_idle()
    archived = await (await gateway.get("/sessions/arch-tools", headers=auth_header(token))).json()
    assert archived["state"] == "archived"
    assert archived["turns"] == live
    (document,) = (await s3_objects(base_env)).values()
    stored = document["turns"]
    assert stored[1]["tool_calls"] == [
        {
            "function": {
                "name": "get_weather",
                "arguments": live[1]["tool_calls"][0]["function"]["arguments"],
            },
            "id": call["id"],
        }
    ]
    assert (stored[2]["role"], stored[2]["tool_name"]) == ("tool", "get_weather")

    # The session resumed from the archive: the model is sent the call and its result again.
    await chat(gateway, token, "arch-tools", "thanks")
    async with aiohttp.ClientSession() as http, http.get(f"{simulator_url(simulator)}/sim/chats") as response:
        sent = (await response.json())[-1]["messages"]
    assert sent[1] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"function": live[1]["tool_calls"][0]["function"]}],
    }
    assert sent[2] == {"role": "tool", "content": "sunny", "tool_name": "get_weather"}
