"""Validation of client request bodies: strict JSON shapes, sizes, and prompt sanitising."""

from __future__ import annotations

import re
import unicodedata
from typing import Literal

import msgspec

from broker.messages import ChatMessage
from common.http import ApiError

SESSION_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
MODEL_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$")
# C0/C1 control characters except tab, newline and carriage return; Unicode text stays intact.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


class ChatBody(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /chat`` body; ``"async": true`` makes it a job (202 + status URL)."""

    session_id: str
    prompt: str
    model: str | None = None
    stream: bool = True
    run_async: bool = msgspec.field(default=False, name="async")


class JobBody(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /jobs`` body: a prompt (optionally in a session) or an OpenAI-style conversation."""

    prompt: str | None = None
    session_id: str | None = None
    model: str | None = None
    messages: list[JobMessage] | None = None


class JobMessage(msgspec.Struct, forbid_unknown_fields=True):
    role: Literal["system", "user", "assistant"]
    content: str


def sanitize_prompt(text: str) -> str:
    """Strip control characters (keeping tab/newlines) and normalise to NFC; keeps Hebrew, emoji."""
    return unicodedata.normalize("NFC", _CONTROL.sub("", text))


def check_session_id(session_id: str) -> str:
    if not SESSION_ID_PATTERN.fullmatch(session_id):
        raise ApiError(
            400,
            "invalid_session_id",
            "session_id must be 1-128 characters of letters, digits, '_', '.', ':' or '-'",
        )
    return session_id


def check_prompt(prompt: str, *, max_chars: int) -> str:
    cleaned = sanitize_prompt(prompt)
    if not cleaned.strip():
        raise ApiError(400, "empty_prompt", "prompt must contain text")
    if len(cleaned) > max_chars:
        raise ApiError(413, "prompt_too_long", f"prompt is longer than {max_chars} characters")
    return cleaned


def check_conversation(messages: list[tuple[str, str]], *, max_chars: int) -> list[ChatMessage]:
    """A caller-supplied conversation of (role, text): sanitised, its last user message non-blank
    and within ``max_chars`` (as a prompt is), the whole within four times that."""
    conversation = [
        ChatMessage(role="system" if role == "developer" else role, content=sanitize_prompt(text))  # type: ignore[arg-type]
        for role, text in messages
    ]
    if not conversation:
        raise ApiError(400, "invalid_request", "messages must not be empty")
    if sum(len(m.content) for m in conversation) > max_chars * 4:
        raise ApiError(413, "prompt_too_long", "the conversation is too long")
    last_user = next((m.content for m in reversed(conversation) if m.role == "user"), "")
    if not last_user.strip():
        raise ApiError(400, "empty_prompt", "the last user message must contain text")
    if len(last_user) > max_chars:
        raise ApiError(413, "prompt_too_long", f"the last user message is longer than {max_chars} characters")
    return conversation


def check_model(model: str | None, *, default: str, allowed: tuple[str, ...]) -> str:
    if model is None:
        return default
    if not MODEL_PATTERN.fullmatch(model):
        raise ApiError(400, "invalid_model", "model is not a valid model name")
    if allowed and model not in allowed:
        raise ApiError(
            400, "unknown_model", f"model {model!r} is not served here; use one of {list(allowed)}"
        )
    return model
