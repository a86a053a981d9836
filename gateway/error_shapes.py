"""Our error bodies (``{"error": <code>, "message": ...}``) rewritten into a client API's own
shape under that API's path prefix: OpenAI's under ``/v1/``, Ollama's under ``/api/``."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from common.http import json_response

__all__ = ["Reshape", "error_shape_middleware"]

_BODY_HEADERS = {"content-type", "content-length"}  # the new body's own

# (code, message, status) -> (the API's body, its status)
Reshape = Callable[[str, str, int], tuple[dict[str, Any], int]]


def error_shape_middleware(prefix: str, reshape: Reshape) -> Middleware:
    """A middleware that answers JSON errors under ``prefix`` in the shape ``reshape`` gives;
    streams already started and non-JSON bodies pass as they are."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        if (
            not request.path.startswith(prefix)
            or response.status < 400
            or response.prepared
            or not isinstance(response, web.Response)
            or response.content_type != "application/json"
            or response.body is None
        ):
            return response
        try:
            original = json.loads(bytes(response.body))  # type: ignore[arg-type]
        except ValueError:
            return response
        if not isinstance(original, dict) or not isinstance(original.get("error"), str):
            return response
        body, status = reshape(original["error"], str(original.get("message") or ""), response.status)
        headers = {
            k: v for k, v in response.headers.items() if k.lower() not in {"content-type", "content-length"}
        }
        return json_response(body, status=status, headers=headers)

    return middleware
