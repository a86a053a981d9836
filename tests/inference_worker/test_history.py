"""What the model is sent: a session's tool calls and tool results replayed as Ollama names them
(HistoryReader.conversation), and what an exchange records (common.exchanges.exchange_turns)."""

from __future__ import annotations

from broker.messages import ChatMessage, ChatRequest, ToolCall, ToolFunction
from common.exchanges import exchange_turns
from common.sessions import Turn
from inference_worker.history import HistoryReader

CALL = ToolCall(function=ToolFunction(name="get_weather", arguments={"city": "Paris"}), id="call_7")


def request(**fields: object) -> ChatRequest:
    base: dict[str, object] = {
        "request_id": "r2",
        "user_id": "u",
        "org_id": "o",
        "session_id": "s",
        "prompt": "and tomorrow?",
        "model": "m",
        "deadline": 100.0,
        "created_at": 50.0,
    }
    return ChatRequest(**(base | fields))  # type: ignore[arg-type]


def test_history_replays_tool_calls_and_results_as_ollama_expects() -> None:
    history = [
        Turn(role="user", content="weather in Paris?", created_at=1.0),
        Turn(role="assistant", content="", created_at=2.0, tool_calls=[CALL], outcome="done"),
        Turn(role="tool", content="21 degrees", created_at=3.0, tool_name="get_weather"),
        Turn(role="assistant", content="It is 21 degrees.", created_at=4.0),
    ]
    assert HistoryReader.conversation(request(), history) == [
        {"role": "user", "content": "weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
        },
        {"role": "tool", "content": "21 degrees", "tool_name": "get_weather"},
        {"role": "assistant", "content": "It is 21 degrees."},
        {"role": "user", "content": "and tomorrow?"},
    ]


def test_an_answer_made_of_tool_calls_is_recorded_with_them() -> None:
    user, answer = exchange_turns(request(prompt="weather in Paris?"), "", "done", tool_calls=[CALL])
    assert (user.role, user.content) == ("user", "weather in Paris?")
    assert (answer.role, answer.content, answer.tool_calls) == ("assistant", "", [CALL])
    _, plain = exchange_turns(request(), "text", "done")
    assert plain.tool_calls is None


def test_a_conversation_ending_with_tool_results_records_them_not_the_old_question() -> None:
    conversation = [
        ChatMessage(role="user", content="weather in Paris and Oslo?"),
        ChatMessage(role="assistant", content="", tool_calls=[CALL, CALL]),
        ChatMessage(role="tool", content="21 degrees", tool_name="get_weather"),
        ChatMessage(role="tool", content="3 degrees", tool_name="get_weather"),
    ]
    turns = exchange_turns(
        request(prompt="", messages=conversation, use_history=False), "Warm, cold.", "done"
    )
    assert [(t.role, t.content, t.tool_name) for t in turns] == [
        ("tool", "21 degrees", "get_weather"),
        ("tool", "3 degrees", "get_weather"),
        ("assistant", "Warm, cold.", None),
    ]
    asked = exchange_turns(request(prompt="", messages=conversation[:1], use_history=False), "", "done")
    assert [(t.role, t.content) for t in asked] == [("user", "weather in Paris and Oslo?"), ("assistant", "")]
