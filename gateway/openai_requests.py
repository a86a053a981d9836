"""OpenAI's request bodies as we take them, and what each parameter becomes.

Every parameter of OpenAI's chat completion request is either honoured (below) or refused with
400 ``unsupported_parameter`` naming it; an unknown parameter is refused the same way (the Structs
forbid unknown fields, see :func:`gateway.validation.read_body`). The README's table says the same.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import msgspec

from broker.messages import ChatMessage, ToolCall, ToolFunction
from common.http import ApiError

__all__ = [
    "CompletionBody",
    "LegacyCompletionBody",
    "OpenAIMessage",
    "StreamOptions",
    "conversation",
    "refuse_unsupported",
    "structured_output",
    "tool_setup",
]


class TextPart(msgspec.Struct):
    type: str
    text: str = ""


class FunctionCallIn(msgspec.Struct):
    name: str
    arguments: str = "{}"  # a JSON object, as a string (OpenAI's wire format)


class ToolCallIn(msgspec.Struct):
    id: str
    function: FunctionCallIn
    type: Literal["function"] = "function"


class OpenAIMessage(msgspec.Struct):
    """A message; fields OpenAI's clients echo back from a response (``refusal``, ``annotations``,
    ``audio``) are accepted when empty."""

    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None
    refusal: str | None = None
    annotations: list[Any] | None = None
    audio: Any = None
    function_call: Any = None


class StreamOptions(msgspec.Struct, forbid_unknown_fields=True):
    include_usage: bool = False
    include_obfuscation: bool = False  # we add no obfuscation padding either way


class FunctionDef(msgspec.Struct):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDef(msgspec.Struct, forbid_unknown_fields=True):
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(msgspec.Struct):
    name: str


class NamedToolChoice(msgspec.Struct):
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaSpec(msgspec.Struct):
    name: str
    schema: dict[str, Any] | None = None
    description: str | None = None
    strict: bool | None = None


class ResponseFormat(msgspec.Struct, forbid_unknown_fields=True):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaSpec | None = None


class CompletionBody(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /v1/chat/completions``. Fields typed ``Any`` are OpenAI parameters we refuse unless
    empty (see :func:`refuse_unsupported`)."""

    model: str
    messages: list[OpenAIMessage]
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    n: int = 1
    tools: list[ToolDef] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    user: str | None = None
    safety_identifier: str | None = None
    session_id: str | None = None
    logprobs: bool | None = None
    store: bool | None = None
    modalities: list[str] | None = None
    service_tier: str | None = None
    top_logprobs: Any = None
    logit_bias: Any = None
    metadata: Any = None
    audio: Any = None
    prediction: Any = None
    reasoning_effort: Any = None
    verbosity: Any = None
    web_search_options: Any = None
    functions: Any = None
    function_call: Any = None
    prompt_cache_key: Any = None


class LegacyCompletionBody(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /v1/completions`` (legacy): one prompt, answered like a one-message chat."""

    model: str
    prompt: str | list[str]
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = 16  # OpenAI's default for this endpoint
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    n: int = 1
    best_of: int | None = None
    user: str | None = None
    session_id: str | None = None
    echo: bool | None = None
    logprobs: Any = None
    logit_bias: Any = None
    suffix: Any = None


# OpenAI parameters we cannot honour on Ollama: refused unless absent or empty.
_REFUSED = (
    "top_logprobs",
    "logit_bias",
    "metadata",
    "audio",
    "prediction",
    "reasoning_effort",
    "verbosity",
    "web_search_options",
    "functions",
    "function_call",
    "prompt_cache_key",
    "logprobs",
    "suffix",
)


def _unsupported(name: str, why: str) -> ApiError:
    return ApiError(400, "unsupported_parameter", f"parameter {name!r} is not supported: {why}")


def refuse_unsupported(body: CompletionBody | LegacyCompletionBody) -> None:
    """Refuse, by name, every parameter set to something we would otherwise ignore."""
    for name in _REFUSED:
        value = getattr(body, name, None)
        if value not in (None, False, {}, [], ""):
            raise _unsupported(name, "the models here do not offer it")
    if body.n != 1:
        raise _unsupported("n", "only n=1 is supported")
    if isinstance(body, LegacyCompletionBody):
        if body.best_of not in (None, 1):
            raise _unsupported("best_of", "only best_of=1 is supported")
        if body.echo:
            raise _unsupported("echo", "the prompt is not echoed")
        return
    if body.store:
        raise _unsupported("store", "completions are not stored for OpenAI's dashboard")
    if body.modalities not in (None, ["text"]):
        raise _unsupported("modalities", "only text output is supported")
    if body.service_tier not in (None, "auto", "default"):
        raise _unsupported("service_tier", "there is one service tier")


def tool_setup(body: CompletionBody) -> tuple[list[dict[str, Any]] | None, bool]:
    """The tools for Ollama (None: none offered) and whether several calls may come back.

    ``tool_choice`` "none" withholds the tools; "auto" (the default) offers them. Ollama cannot be
    made to call a tool, so "required" and a named function are refused rather than ignored.
    """
    if body.tool_choice == "required" or isinstance(body.tool_choice, NamedToolChoice):
        raise _unsupported("tool_choice", "only 'auto' and 'none' (a model here cannot be forced to call)")
    parallel = body.parallel_tool_calls is not False
    if not body.tools or body.tool_choice == "none":
        return None, parallel
    tools = [msgspec.to_builtins(tool) for tool in body.tools]
    for tool in tools:
        tool["function"].pop("strict", None)  # Ollama has no strict mode for tools
    return tools, parallel


def structured_output(response_format: ResponseFormat | None) -> str | dict[str, Any] | None:
    """``response_format`` as Ollama's ``format``: "json", a JSON schema, or None for text."""
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type == "json_object":
        return "json"
    spec = response_format.json_schema
    if spec is None or not spec.schema:
        raise ApiError(400, "invalid_parameter", "response_format json_schema needs json_schema.schema")
    return spec.schema


def _text(content: str | list[TextPart] | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if any(part.type != "text" for part in content):
        raise ApiError(400, "unsupported_content", "only text content parts are supported")
    return "".join(part.text for part in content)


def _arguments(call: ToolCallIn) -> dict[str, Any]:
    try:
        arguments = json.loads(call.function.arguments or "{}")
    except ValueError:
        arguments = None
    if not isinstance(arguments, dict):
        raise ApiError(
            400, "invalid_request", f"tool call {call.id!r}: function.arguments must be a JSON object"
        )
    return arguments


def conversation(messages: list[OpenAIMessage]) -> list[ChatMessage]:
    """OpenAI messages as the broker's: assistant tool calls with their arguments as objects, a
    tool result named by the function its ``tool_call_id`` called (Ollama's ``tool_name``)."""
    called: dict[str, str] = {}
    out: list[ChatMessage] = []
    for message in messages:
        text = _text(message.content)
        if message.role == "assistant" and message.tool_calls:
            calls = []
            for call in message.tool_calls:
                called[call.id] = call.function.name
                calls.append(
                    ToolCall(
                        function=ToolFunction(name=call.function.name, arguments=_arguments(call)), id=call.id
                    )
                )
            out.append(ChatMessage(role="assistant", content=text, tool_calls=calls))
        elif message.role == "tool":
            if message.tool_call_id is None:
                raise ApiError(400, "invalid_request", "a tool message needs tool_call_id")
            out.append(ChatMessage(role="tool", content=text, tool_name=called.get(message.tool_call_id)))
        else:
            role = "system" if message.role == "developer" else message.role
            out.append(ChatMessage(role=role, content=text))
    return out
