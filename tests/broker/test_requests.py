"""Requests on the request queue by their ``type``: chats (also without ``type``, as integrators
wrote them before embeddings) and embeddings."""

from __future__ import annotations

import msgspec
import pytest

from broker.messages import (
    ChatMessage,
    ChatRequest,
    EmbedRequest,
    ToolCall,
    ToolFunction,
    decode_request,
    encoder,
)


def test_a_chat_without_type_is_still_a_chat() -> None:
    body = {
        "request_id": "r1",
        "user_id": "u",
        "org_id": "o",
        "session_id": None,
        "prompt": "hi",
        "model": "llama3.2",
        "deadline": 2.0,
        "created_at": 1.0,
    }
    request = decode_request(msgspec.json.encode(body))
    assert isinstance(request, ChatRequest) and request.tools is None and request.format is None


def test_chats_with_tools_and_embeddings_round_trip() -> None:
    chat = ChatRequest(
        request_id="r2",
        user_id="u",
        org_id="o",
        session_id=None,
        prompt="",
        model="llama3.2",
        deadline=2.0,
        created_at=1.0,
        messages=[
            ChatMessage(role="user", content="weather?"),
            ChatMessage(
                role="assistant",
                content="",
                tool_calls=[
                    ToolCall(function=ToolFunction(name="get_weather", arguments={"city": "x"}), id="c1")
                ],
            ),
            ChatMessage(role="tool", content="sunny", tool_name="get_weather"),
        ],
        tools=[{"type": "function", "function": {"name": "get_weather"}}],
        format={"type": "object"},
    )
    assert decode_request(encoder.encode(chat)) == chat
    embed = EmbedRequest(
        request_id="r3", user_id="u", org_id="o", model="m", input=["a", "b"], deadline=2.0, created_at=1.0
    )
    assert decode_request(encoder.encode(embed)) == embed
    with pytest.raises(msgspec.ValidationError):
        decode_request(b'{"type": "embed.request", "request_id": "r"}')
