"""Streaming and non-streaming chats through gateway -> RabbitMQ -> worker -> simulator."""

from __future__ import annotations

from typing import Any

from helpers import KeyPair, auth_header, read_sse, text_of

from inference_worker.simulator_text import expected_answer


async def test_streamed_chat_arrives_in_order_and_ends_with_done(
    gateway: Any, worker: Any, keys: KeyPair
) -> None:
    token = keys.mint("alice")
    response = await gateway.post(
        "/chat", json={"session_id": "s1", "prompt": "Hello, how are you?"}, headers=auth_header(token)
    )
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    events = await read_sse(response)
    tokens = [e for e in events if e.event == "token"]
    assert len(tokens) >= 2, "the answer should arrive in several chunks"
    assert [e.data["seq"] for e in tokens] == list(range(len(tokens)))
    assert events[-1].event == "done"
    done = events[-1].data
    assert done["session_id"] == "s1"
    assert done["model"] == "llama3.2"
    assert done["usage"]["completion_tokens"] == 24
    assert done["usage"]["prompt_tokens"] > 0
    expected = expected_answer("llama3.2", [{"role": "user", "content": "Hello, how are you?"}], 24)
    assert text_of(events) == expected


async def test_non_streaming_gives_same_text_as_one_json_body(
    gateway: Any, worker: Any, keys: KeyPair
) -> None:
    token = keys.mint("bob")
    prompt = "שלום, מה שלומך? 👋"
    response = await gateway.post(
        "/chat", json={"session_id": "s-json", "prompt": prompt, "stream": False}, headers=auth_header(token)
    )
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["session_id"] == "s-json"
    assert body["model"] == "llama3.2"
    assert body["response"] == expected_answer("llama3.2", [{"role": "user", "content": prompt}], 24)
    assert body["usage"]["completion_tokens"] == 24


async def test_second_turn_sees_first_turn_history(gateway: Any, worker: Any, keys: KeyPair) -> None:
    token = keys.mint("carol")
    first = await gateway.post(
        "/chat",
        json={"session_id": "conv", "prompt": "first question", "stream": False},
        headers=auth_header(token),
    )
    first_answer = (await first.json())["response"]
    second = await gateway.post(
        "/chat",
        json={"session_id": "conv", "prompt": "second question", "stream": False},
        headers=auth_header(token),
    )
    body = await second.json()
    history = [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": first_answer},
        {"role": "user", "content": "second question"},
    ]
    assert body["response"] == expected_answer("llama3.2", history, 24)
    assert body["response"].startswith(" [turns=2]")


async def test_sessions_of_different_users_do_not_share_history(
    gateway: Any, worker: Any, keys: KeyPair
) -> None:
    for user in ("dave", "erin"):
        response = await gateway.post(
            "/chat",
            json={"session_id": "same-id", "prompt": "hi", "stream": False},
            headers=auth_header(keys.mint(user)),
        )
        assert (await response.json())["response"].startswith(" [turns=0]")
