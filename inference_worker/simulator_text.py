"""Deterministic content for the Ollama-API simulator: answers, prompt sizes, model metadata.

The answer is a pure function of the model and the messages, so tests anywhere in the project can
compute what the simulator will stream. The first token is `` [turns=N]``, N being the number of
user/assistant messages before the last user message: a test can see that the history was sent.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Mapping, Sequence

__all__ = [
    "canonical_model",
    "expected_answer",
    "expected_tokens",
    "generate_tokens",
    "model_details",
    "prior_turns",
    "prompt_token_count",
    "stop_at",
]

_WORDS = (
    "the", "answer", "depends", "on", "context", "and", "a", "few", "details", "we", "should",
    "consider", "first", "data", "model", "system", "team", "review", "plan", "cost", "risk",
    "time", "quality", "customer", "service", "report", "policy", "process", "support", "update",
    "network", "server", "request", "response", "queue", "message", "session", "history", "user",
    "project", "budget", "meeting", "schedule", "result", "value", "option", "change", "version",
    "release", "test", "metric", "latency", "throughput", "capacity", "storage", "security",
    "access", "account", "invoice", "contract", "office", "region", "market", "product", "feature",
    "design", "document", "summary", "question", "example", "simple", "clear", "important", "useful",
    "careful", "likely", "usually", "often", "also", "then", "because", "while", "after", "before",
    "with", "without", "for", "from", "into", "about", "between", "across", "every", "each", "more",
    "less", "new", "stable", "ready", "secure", "fast", "small", "large", "early", "later", "today",
)  # fmt: skip

_ROLES_COUNTED = frozenset({"user", "assistant"})


def canonical_model(name: str) -> str:
    """Ollama's name for a model: ``llama3.2`` and ``llama3.2:latest`` are the same model."""
    return name if ":" in name else f"{name}:latest"


def model_details(name: str) -> dict[str, object]:
    """Made-up but stable ``/api/tags`` metadata for a canonical model name."""
    digest = hashlib.sha256(name.encode()).hexdigest()
    family_match = re.match(r"[a-z]+", name.lower())
    family = family_match.group() if family_match else "llama"
    return {
        "name": name,
        "model": name,
        "size": 2_000_000_000 + int(digest[:6], 16),
        "digest": digest,
        "details": {
            "parent_model": "",
            "format": "gguf",
            "family": family,
            "families": [family],
            "parameter_size": "3.2B",
            "quantization_level": "Q4_K_M",
        },
    }


def prior_turns(turns: Sequence[tuple[str, str]]) -> int:
    """User/assistant messages before the last user message (all of them if there is none)."""
    last_user = max((i for i, (role, _) in enumerate(turns) if role == "user"), default=len(turns))
    return sum(1 for role, _ in turns[:last_user] if role in _ROLES_COUNTED)


def prompt_token_count(turns: Sequence[tuple[str, str]]) -> int:
    """A stand-in for the prompt's token count: words plus a few template tokens per message."""
    return sum(len(content.split()) + 4 for _, content in turns)


def generate_tokens(model: str, turns: Sequence[tuple[str, str]], count: int) -> list[str]:
    """The ``count`` tokens streamed for ``(role, content)`` turns: `` [turns=N]``, then words.

    Every token has a leading space, like an LLM's; a shorter answer is a prefix of a longer one
    except for its final full stop.
    """
    if count <= 0:
        return []
    last_user = next((content for role, content in reversed(turns) if role == "user"), "")
    seed_text = f"{canonical_model(model)}\n{len(turns)}\n{last_user}"
    rng = random.Random(int.from_bytes(hashlib.sha256(seed_text.encode()).digest()[:8], "big"))
    tokens = [f" [turns={prior_turns(turns)}]"]
    capitalize = True
    for i in range(1, count):
        word = rng.choice(_WORDS)
        if capitalize:
            word = word.capitalize()
        roll = rng.random()
        if i == count - 1 or roll < 0.08:
            word += "."
        elif roll < 0.16:
            word += ","
        capitalize = word.endswith(".")
        tokens.append(f" {word}")
    return tokens


def stop_at(tokens: list[str], stops: Sequence[str]) -> list[str] | None:
    """Ollama's ``stop`` option: the tokens up to (not including) the first stop sequence, cutting
    the token it begins in; None when no stop sequence occurs."""
    text = ""
    for i, token in enumerate(tokens):
        text += token
        found = [text.find(stop) for stop in stops if stop and stop in text]
        if found:
            keep = text[: min(found)]
            kept, length = [], 0
            for piece in tokens[: i + 1]:
                if length + len(piece) >= len(keep):
                    if keep[length:]:
                        kept.append(keep[length:])
                    return kept
                kept.append(piece)
                length += len(piece)
            return kept
    return None


def _as_turns(messages: Sequence[Mapping[str, object]]) -> list[tuple[str, str]]:
    return [(str(m.get("role") or ""), str(m.get("content") or "")) for m in messages]


def expected_tokens(model: str, messages: Sequence[Mapping[str, object]], answer_tokens: int) -> list[str]:
    """The tokens the simulator streams for a chat request (``messages`` as sent to ``/api/chat``)."""
    return generate_tokens(model, _as_turns(messages), answer_tokens)


def expected_answer(model: str, messages: Sequence[Mapping[str, object]], answer_tokens: int) -> str:
    """The whole answer the simulator gives for a chat request: its tokens concatenated."""
    return "".join(expected_tokens(model, messages, answer_tokens))
