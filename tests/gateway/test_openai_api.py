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


async def test_sampling_options_reach_the_model(gateway: Any, worker: Any, keys: KeyPair) -> None:
    """max_tokens and stop (a string or a list) travel to Ollama's options and shape the answer."""
    messages = [{"role": "user", "content": "options please"}]
    full = expected_answer("llama3.2", messages, 24)
    async with client_for(gateway, keys.mint("opts")) as client:
        short = await client.chat.completions.create(model="llama3.2", messages=messages, max_tokens=3)  # type: ignore[arg-type]
        assert short.usage is not None and short.usage.completion_tokens == 3
        assert short.choices[0].finish_reason == "length"
        assert full.startswith(short.choices[0].message.content or "")
        word = full.split()[5]
        for stop in (word, [f"no-such-{word}", word]):
            stopped = await client.chat.completions.create(model="llama3.2", messages=messages, stop=stop)  # type: ignore[arg-type]
            assert stopped.choices[0].message.content == full[: full.index(word)]
            assert stopped.choices[0].finish_reason == "stop"


async def test_a_long_last_user_message_is_refused_like_a_long_prompt(
    gateway_factory: Any, keys: KeyPair
) -> None:
    gateway = await gateway_factory(PROMPT_MAX_CHARS="50")
    body = {"model": "llama3.2", "messages": [{"role": "user", "content": "x" * 51}]}
    for path, payload in (("/v1/chat/completions", body), ("/jobs", {"messages": body["messages"]})):
        response = await gateway.post(path, json=payload, headers=auth_header(keys.mint("long")))
        assert response.status == 413, path
        error = (await response.json())["error"]
        assert (error["code"] if isinstance(error, dict) else error) == "prompt_too_long"
