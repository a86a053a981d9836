"""The OpenAI-compatible API, driven by the official ``openai`` client."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from helpers import KeyPair, auth_header

from inference_worker.simulator_text import expected_answer


def client_for(gateway: Any, token: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=str(gateway.make_url("/v1")), api_key=token, max_retries=0, timeout=30)


async def test_openai_client_non_streaming(gateway: Any, worker: Any, keys: KeyPair) -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hello there"},
    ]
    async with client_for(gateway, keys.mint("oa")) as client:
        completion = await client.chat.completions.create(model="llama3.2", messages=messages)  # type: ignore[arg-type]
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == expected_answer("llama3.2", messages, 24)
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 24


async def test_openai_client_streaming_reads_done(gateway: Any, worker: Any, keys: KeyPair) -> None:
    messages = [{"role": "user", "content": "stream please"}]
    async with client_for(gateway, keys.mint("oa")) as client:
        stream = await client.chat.completions.create(
            model="llama3.2",
            messages=messages,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected_answer("llama3.2", messages, 24)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 24


async def test_raw_stream_ends_with_done_marker(gateway: Any, worker: Any, keys: KeyPair) -> None:
    response = await gateway.post(
        "/v1/chat/completions",
        json={"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": True},
        headers=auth_header(keys.mint("raw")),
    )
    lines = [line for line in (await response.text()).split("\n") if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"


async def test_models_and_openai_errors(gateway: Any, worker: Any, keys: KeyPair) -> None:
    async with client_for(gateway, keys.mint("oa")) as client:
        models = await client.models.list()
        assert {"llama3.2", "qwen2.5"} <= {m.id for m in models.data}
        with pytest.raises(openai.BadRequestError) as bad:
            await client.chat.completions.create(
                model="no-such-model", messages=[{"role": "user", "content": "x"}]
            )
        assert bad.value.code == "unknown_model"
    async with client_for(gateway, "not-a-token") as client:
        with pytest.raises(openai.AuthenticationError) as denied:
            await client.models.list()
        assert denied.value.body["type"] == "authentication_error"  # type: ignore[index]


async def test_session_tied_completion_is_recorded(gateway: Any, worker: Any, keys: KeyPair) -> None:
    token = keys.mint("tied")
    async with client_for(gateway, token) as client:
        await client.chat.completions.create(
            model="llama3.2",
            messages=[{"role": "user", "content": "remember me"}],
            extra_body={"session_id": "oa-session"},
        )
    session = await (await gateway.get("/sessions/oa-session", headers=auth_header(token))).json()
    assert [t["content"] for t in session["turns"] if t["role"] == "user"] == ["remember me"]
