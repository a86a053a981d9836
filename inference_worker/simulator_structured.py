"""Deterministic structured output for the Ollama-API simulator: tool calls, ``format`` answers and
embeddings, each a pure function of the request so tests can compute what the simulator answers.

- **Tools**: when a request offers tools and its last message is the user's, every offered tool
  whose name appears in that message (``get_weather`` or ``get weather``, any case) is called,
  with arguments generated from its ``parameters`` schema. A conversation ending with a tool
  result, or naming no tool, is answered with text as usual.
- **format**: ``"json"`` answers ``{"answer": "<the usual words>"}``; a JSON schema answers a value
  that conforms to it (objects carry every property, ``$ref``/``$defs`` are followed, enums and
  bounds are respected).
- **Embeddings**: a unit vector per input, seeded by the model and the text.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["embedding", "json_answer", "schema_value", "tool_calls_for"]

_WORDS = ("alpha", "bravo", "delta", "echo", "harbor", "lima", "nova", "orbit", "quartz", "sierra")
_MAX_DEPTH = 8


def _rng(*parts: str) -> random.Random:
    digest = hashlib.sha256("\n".join(parts).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _resolve(ref: str, root: Mapping[str, Any]) -> Mapping[str, Any]:
    node: Any = root
    for part in ref.removeprefix("#/").split("/") if ref.startswith("#/") else ():
        node = node.get(part, {}) if isinstance(node, Mapping) else {}
    return node if isinstance(node, Mapping) else {}


def schema_value(
    schema: Any, rng: random.Random, root: Mapping[str, Any] | None = None, depth: int = 0
) -> Any:
    """A value that conforms to ``schema`` (the JSON Schema subset structured output uses)."""
    if not isinstance(schema, Mapping) or depth > _MAX_DEPTH:
        return None if depth > _MAX_DEPTH else {}
    root = schema if root is None else root
    if "$ref" in schema:
        return schema_value(_resolve(str(schema["$ref"]), root), rng, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][rng.randrange(len(schema["enum"]))]
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            preferred = [o for o in options if not (isinstance(o, Mapping) and o.get("type") == "null")]
            return schema_value((preferred or options)[0], rng, root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    if kind == "object":
        properties = schema.get("properties") or {}
        return {name: schema_value(sub, rng, root, depth + 1) for name, sub in properties.items()}
    if kind == "array":
        low = int(schema.get("minItems", 1))
        high = int(schema.get("maxItems", max(low, 2)))
        count = max(low, min(high, 2))
        return [schema_value(schema.get("items", {}), rng, root, depth + 1) for _ in range(count)]
    if kind == "integer":
        first = math.ceil(schema.get("minimum", schema.get("exclusiveMinimum", -1) + 1))
        last = math.floor(schema.get("maximum", schema.get("exclusiveMaximum", 101) - 1))
        return rng.randint(first, max(first, last))
    if kind == "number":
        bottom = float(schema.get("minimum", 0.0))
        top = float(schema.get("maximum", bottom + 100.0))
        return round(rng.uniform(bottom, top), 2)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    return _string(schema, rng)


def _string(schema: Mapping[str, Any], rng: random.Random) -> str:
    fmt = schema.get("format")
    if fmt == "date":
        return "2024-05-17"
    if fmt == "date-time":
        return "2024-05-17T09:30:00Z"
    if fmt == "email":
        return "user@example.com"
    if fmt in {"uri", "url"}:
        return "https://example.com/"
    text = rng.choice(_WORDS)
    low, high = int(schema.get("minLength", 0)), int(schema.get("maxLength", 1 << 16))
    while len(text) < low:
        text += rng.choice(_WORDS)
    return text[: max(high, 0)]


def json_answer(fmt: str | Mapping[str, Any], model: str, last_user: str, words: Sequence[str]) -> str:
    """The answer text for ``format``: JSON, conforming to it when it is a schema."""
    if isinstance(fmt, Mapping):
        value = schema_value(fmt, _rng("format", model, last_user, json.dumps(fmt, sort_keys=True)))
    else:
        value = {"answer": "".join(words).strip()}
    return json.dumps(value, ensure_ascii=False)


def tool_calls_for(
    tools: Sequence[Mapping[str, Any]], messages: Sequence[Mapping[str, Any]], model: str
) -> list[dict[str, Any]]:
    """Ollama ``tool_calls`` for a request offering ``tools``: empty when no call is asked for."""
    if not messages or messages[-1].get("role") != "user":
        return []
    text = str(messages[-1].get("content") or "").lower()
    calls = []
    for tool in tools:
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            continue
        name: str = function["name"]
        if name.lower() in text or name.replace("_", " ").lower() in text:
            rng = _rng("tool", model, name, text)
            arguments = schema_value(function.get("parameters") or {"type": "object"}, rng)
            calls.append(
                {"function": {"name": name, "arguments": arguments if isinstance(arguments, dict) else {}}}
            )
    return calls


def embedding(model: str, text: str, dimensions: int) -> list[float]:
    """A deterministic unit vector of ``dimensions`` for ``text``."""
    rng = _rng("embed", model, text)
    vector = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [x / norm for x in vector]
