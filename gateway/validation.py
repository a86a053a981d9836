"""Validation of client request bodies: strict JSON shapes, sizes, and prompt sanitising."""

from __future__ import annotations

import re
import unicodedata
from typing import Literal, TypeVar

import msgspec
from aiohttp import web

from broker.messages import ChatMessage, GenerationOptions
from common.http import ApiError, read_json

T = TypeVar("T")
_UNKNOWN_FIELD = re.compile(r"^Object contains unknown field `([^`]*)`(?: - at `\$\.?([^`]*)`)?$")

SESSION_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
MODEL_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$")
# C0/C1 control characters except tab, newline and carriage return; Unicode text stays intact.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


class ChatOptions(msgspec.Struct, forbid_unknown_fields=True):
    """``/chat``'s ``options``: sampling as Ollama names it (``max_tokens`` = ``num_predict``)."""

    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    num_predict: int | None = None
    max_tokens: int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None

    def generation(self) -> GenerationOptions | None:
        limit = self.num_predict if self.num_predict is not None else self.max_tokens
        return generation_options(
            temperature=self.temperature,
            top_p=self.top_p,
            num_predict=limit,
            seed=self.seed,
            stop=self.stop,
            frequency_penalty=self.frequency_penalty,
            presence_penalty=self.presence_penalty,
        )


class ChatBody(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /chat`` body; ``"async": true`` makes it a job (202 + status URL)."""

    session_id: str
    prompt: str
    model: str | None = None
    stream: bool = True
    run_async: bool = msgspec.field(default=False, name="async")
    options: ChatOptions | None = None


def generation_options(
    *,
    temperature: float | None = None,
    top_p: float | None = None,
    num_predict: int | None = None,
    seed: int | None = None,
    stop: str | list[str] | None = None,
    frequency_penalty: float | None = None,
    presence_penalty: float | None = None,
    top_k: int | None = None,
    min_p: float | None = None,
    typical_p: float | None = None,
    repeat_penalty: float | None = None,
    repeat_last_n: int | None = None,
    num_ctx: int | None = None,
) -> GenerationOptions | None:
    """Checked sampling options (None when none is set); bad values are 400 ``invalid_parameter``."""
    for name, count in (("top_k", top_k), ("repeat_last_n", repeat_last_n), ("num_ctx", num_ctx)):
        if count is not None and count < (-1 if name == "repeat_last_n" else 1):
            raise ApiError(400, "invalid_parameter", f"{name} is out of range")
    for name, share in (("min_p", min_p), ("typical_p", typical_p)):
        if share is not None and not 0 <= share <= 1:
            raise ApiError(400, "invalid_parameter", f"{name} must be between 0 and 1")
    if repeat_penalty is not None and repeat_penalty < 0:
        raise ApiError(400, "invalid_parameter", "repeat_penalty must be at least 0")
    if num_predict is not None and num_predict < 1:
        raise ApiError(400, "invalid_parameter", "max_tokens (num_predict) must be at least 1")
    if temperature is not None and not 0 <= temperature <= 2:
        raise ApiError(400, "invalid_parameter", "temperature must be between 0 and 2")
    if top_p is not None and not 0 <= top_p <= 1:
        raise ApiError(400, "invalid_parameter", "top_p must be between 0 and 1")
    for name, penalty in (("frequency_penalty", frequency_penalty), ("presence_penalty", presence_penalty)):
        if penalty is not None and not -2 <= penalty <= 2:
            raise ApiError(400, "invalid_parameter", f"{name} must be between -2 and 2")
    stops = [stop] if isinstance(stop, str) else stop
    if stops is not None and (len(stops) > 4 or not all(stops)):
        raise ApiError(400, "invalid_parameter", "stop takes up to 4 non-empty sequences")
    options = GenerationOptions(
        temperature=temperature,
        top_p=top_p,
        num_predict=num_predict,
        seed=seed,
        stop=stop,
        frequency_penalty=frequency_penalty,
        presence_penalty=presence_penalty,
        top_k=top_k,
        min_p=min_p,
        typical_p=typical_p,
        repeat_penalty=repeat_penalty,
        repeat_last_n=repeat_last_n,
        num_ctx=num_ctx,
    )
    return options if options.to_ollama() else None


async def read_body(request: web.Request, model: type[T]) -> T:
    """:func:`read_json`, naming a field the API does not take: 400 ``unsupported_parameter``
    (never dropped silently)."""
    try:
        return await read_json(request, model)
    except ApiError as exc:
        found = _UNKNOWN_FIELD.match(exc.message) if exc.code == "invalid_request" else None
        if found is None:
            raise
        name = f"{found.group(2)}.{found.group(1)}" if found.group(2) else found.group(1)
        raise ApiError(400, "unsupported_parameter", f"parameter {name!r} is not supported") from None


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
    """A caller-supplied conversation of (role, text): see :func:`check_messages`."""
    conversation = [
        ChatMessage(role="system" if role == "developer" else role, content=text)  # type: ignore[arg-type]
        for role, text in messages
    ]
    return check_messages(conversation, max_chars=max_chars)


def check_messages(messages: list[ChatMessage], *, max_chars: int) -> list[ChatMessage]:
    """A caller-supplied conversation: sanitised, its last user message non-blank and within
    ``max_chars`` (as a prompt is), the whole within four times that."""
    conversation = [msgspec.structs.replace(m, content=sanitize_prompt(m.content)) for m in messages]
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
