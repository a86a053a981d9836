"""Ollama's model and embedding routes on the gateway: ``/api/tags``, ``/api/show``, ``/api/ps``,
``/api/version``, ``/api/embed`` (and the older ``/api/embeddings``), and the model management
routes (pull, push, create, copy, delete, blobs), refused with 403: the operators choose which
models are served, the callers do not.

The gateway knows the models the workers announce (what healthy Ollama nodes reported within
the last minute), not the nodes' file details: ``/api/tags`` and ``/api/show`` describe each model
by name, and ``/api/ps`` lists those models as loaded.
"""

from __future__ import annotations

import time

import msgspec
from aiohttp import web

from common.http import ApiError, json_response
from gateway.appkeys import MODELS, SETTINGS
from gateway.embeddings import check_inputs, embed
from gateway.ollama_api import KeepAlive, check_ollama_model, rfc3339
from gateway.validation import read_body

__all__ = [
    "OLLAMA_VERSION",
    "ollama_embed",
    "ollama_embeddings",
    "ollama_management",
    "ollama_ps",
    "ollama_show",
    "ollama_tags",
    "ollama_version",
]

# The Ollama API version this gateway speaks (clients check it for features such as tools).
OLLAMA_VERSION = "0.12.0"
KEEP_ALIVE_SECONDS = 300


class ShowBody(msgspec.Struct, forbid_unknown_fields=True):
    model: str = ""
    name: str = ""  # the older spelling
    verbose: bool | None = None


class EmbedBody(msgspec.Struct, forbid_unknown_fields=True):
    model: str
    input: str | list[str]
    truncate: bool = True
    dimensions: int | None = None
    keep_alive: KeepAlive = None


class EmbeddingsBody(msgspec.Struct, forbid_unknown_fields=True):
    model: str
    prompt: str
    keep_alive: KeepAlive = None


def _canonical(name: str) -> str:
    return name if ":" in name else f"{name}:latest"


def _details(name: str) -> dict[str, object]:
    family = name.split(":")[0].split("/")[-1].rstrip("0123456789.") or name
    return {
        "parent_model": "",
        "format": "gguf",
        "family": family,
        "families": [family],
        "parameter_size": "",
        "quantization_level": "",
    }


def _entry(name: str) -> dict[str, object]:
    return {"name": name, "model": name, "size": 0, "digest": "", "details": _details(name)}


async def _served(request: web.Request) -> list[str]:
    """The served models by Ollama's names (``x:latest``), each once."""
    return list(dict.fromkeys(_canonical(m) for m in await request.app[MODELS].listed()))


async def ollama_tags(request: web.Request) -> web.Response:
    now = rfc3339()
    return json_response({"models": [_entry(name) | {"modified_at": now} for name in await _served(request)]})


async def ollama_ps(request: web.Request) -> web.Response:
    expires = rfc3339(time.time() + KEEP_ALIVE_SECONDS)
    return json_response(
        {
            "models": [
                _entry(name) | {"expires_at": expires, "size_vram": 0} for name in await _served(request)
            ]
        }
    )


async def ollama_version(request: web.Request) -> web.Response:
    return json_response({"version": OLLAMA_VERSION})


async def ollama_show(request: web.Request) -> web.Response:
    body = await read_body(request, ShowBody)
    name = body.model or body.name
    if not name:
        raise ApiError(400, "invalid_request", "model is required")
    await check_ollama_model(request, name)
    return json_response(
        {
            "modelfile": "",
            "parameters": "",
            "template": "",
            "details": _details(_canonical(name)),
            "model_info": {},
            "capabilities": ["completion", "tools", "embedding"],
            "modified_at": rfc3339(),
        }
    )


async def ollama_embed(request: web.Request) -> web.Response:
    s = request.app[SETTINGS]
    body = await read_body(request, EmbedBody)
    inputs = check_inputs(
        [body.input] if isinstance(body.input, str) else body.input, max_chars=s.prompt_max_chars
    )
    model = await check_ollama_model(request, body.model)
    started = time.perf_counter_ns()
    done = await embed(request, model, inputs, truncate=body.truncate, dimensions=body.dimensions)
    return json_response(
        {
            "model": body.model,
            "embeddings": done.embeddings,
            "total_duration": done.usage.total_duration_ns or time.perf_counter_ns() - started,
            "load_duration": done.usage.load_duration_ns,
            "prompt_eval_count": done.usage.prompt_tokens,
        }
    )


async def ollama_embeddings(request: web.Request) -> web.Response:
    """The older ``/api/embeddings``: one ``prompt``, one ``embedding``."""
    s = request.app[SETTINGS]
    body = await read_body(request, EmbeddingsBody)
    inputs = check_inputs([body.prompt], max_chars=s.prompt_max_chars)
    model = await check_ollama_model(request, body.model)
    done = await embed(request, model, inputs)
    assert done.embeddings is not None
    return json_response({"embedding": done.embeddings[0]})


async def ollama_management(request: web.Request) -> web.Response:
    raise ApiError(
        403,
        "model_management_disabled",
        f"{request.path} is not available here: the operators choose which models are served "
        "(GET /api/tags lists them)",
    )
