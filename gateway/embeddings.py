"""Embeddings through the workers: OpenAI's ``POST /v1/embeddings`` here, Ollama's ``/api/embed``
in :mod:`gateway.ollama_models`, both through :func:`embed` (one
:class:`~broker.messages.EmbedRequest` for the whole batch, relayed like a chat: rate limit,
deadline, cancellation)."""

from __future__ import annotations

import base64
from array import array
from typing import Any, Literal

import msgspec
import structlog
from aiohttp import web

from broker.messages import ChatDone
from common.http import ApiError, json_response
from gateway.appkeys import MODELS, SETTINGS
from gateway.chat_requests import build_embed
from gateway.relay import Answer, relay
from gateway.validation import check_model, read_body, sanitize_prompt

__all__ = ["MAX_INPUTS", "EmbeddingsBody", "create_embeddings", "embed"]

log = structlog.get_logger(__name__)

MAX_INPUTS = 256  # texts in one request (OpenAI allows 2048; a worker embeds them in one call)


class EmbeddingsBody(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /v1/embeddings``; ``input`` as token arrays is refused (the models take text)."""

    model: str
    input: str | list[str | int | list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None


def check_inputs(inputs: list[Any], *, max_chars: int) -> list[str]:
    """The batch: 1 to :data:`MAX_INPUTS` non-empty texts within four times ``max_chars`` in all."""
    if not inputs:
        raise ApiError(400, "invalid_request", "input must not be empty")
    if not all(isinstance(text, str) for text in inputs):
        raise ApiError(400, "unsupported_content", "input must be text (token arrays are not supported)")
    if len(inputs) > MAX_INPUTS:
        raise ApiError(400, "invalid_request", f"at most {MAX_INPUTS} inputs per request")
    texts = [sanitize_prompt(text) for text in inputs]
    if any(not text.strip() for text in texts):
        raise ApiError(400, "invalid_request", "every input must contain text")
    if sum(len(text) for text in texts) > max_chars * 4:
        raise ApiError(413, "prompt_too_long", "the inputs are too long")
    return texts


async def embed(
    request: web.Request,
    model: str,
    inputs: list[str],
    *,
    truncate: bool = True,
    dimensions: int | None = None,
) -> ChatDone:
    """Embed ``inputs`` (checked) with ``model`` (checked); the worker's done, with ``embeddings``."""
    if dimensions is not None and dimensions < 1:
        raise ApiError(400, "invalid_parameter", "dimensions must be at least 1")
    result = await relay(
        request, build_embed(request, model, inputs, truncate=truncate, dimensions=dimensions), None
    )
    assert isinstance(result, Answer)  # no stream format: the whole answer
    if result.done.embeddings is None or len(result.done.embeddings) != len(inputs):
        raise ApiError(502, "model_error", "the model node answered without one vector per input")
    return result.done


def _encoded(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "base64":  # little-endian float32, as OpenAI sends it
        return base64.b64encode(array("f", vector).tobytes()).decode()
    return vector


async def create_embeddings(request: web.Request) -> web.Response:
    s = request.app[SETTINGS]
    body = await read_body(request, EmbeddingsBody)
    raw = [body.input] if isinstance(body.input, str) else list(body.input)
    inputs = check_inputs(raw, max_chars=s.prompt_max_chars)
    model = check_model(body.model, default=s.default_model, allowed=await request.app[MODELS].current())
    if body.user:
        log.info("openai_end_user", end_user=body.user)
    done = await embed(request, model, inputs, dimensions=body.dimensions)
    assert done.embeddings is not None
    tokens = done.usage.prompt_tokens
    return json_response(
        {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": _encoded(vector, body.encoding_format)}
                for i, vector in enumerate(done.embeddings)
            ],
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )
