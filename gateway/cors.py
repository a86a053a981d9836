"""CORS, so browser apps on allowed origins can call the API with their bearer tokens.

``CORS_ALLOWED_ORIGINS`` (comma-separated, empty by default: no cross-origin access) lists exact
origins (``https://chat.example.com``) or ``*``. A pre-flight (``OPTIONS`` with ``Origin`` and
``Access-Control-Request-Method``) is answered here, before authentication, since browsers send
it without credentials: 204 with the ``Access-Control-*`` headers for an allowed origin, 403 with
none for another. Actual responses to an allowed origin (streams included) carry
``Access-Control-Allow-Origin`` and expose the headers clients read. ``CORS_ALLOW_CREDENTIALS``
(false by default; tokens travel in ``Authorization``, not cookies) adds
``Access-Control-Allow-Credentials`` for listed origins, never with ``*``: the settings refuse
that combination, and the browser would too.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from common.http import ApiError
from common.settings import Env, SettingsError

__all__ = ["CorsPolicy", "cors_middleware", "cors_on_prepare"]

ALLOWED_METHODS = "GET, POST, DELETE, OPTIONS"
ALLOWED_HEADERS = "Authorization, Content-Type, X-Request-ID"
EXPOSED_HEADERS = "X-Request-ID, Retry-After, RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset, Location"
MAX_AGE_SECONDS = 600


@dataclass(frozen=True, slots=True)
class CorsPolicy:
    origins: frozenset[str] = frozenset()
    any_origin: bool = False
    allow_credentials: bool = False

    @classmethod
    def from_env(cls, env: Env) -> CorsPolicy:
        listed = [origin.rstrip("/") for origin in env.list("CORS_ALLOWED_ORIGINS", ())]
        credentials = env.bool("CORS_ALLOW_CREDENTIALS", False)
        any_origin = "*" in listed
        if any_origin and credentials:
            raise SettingsError("CORS_ALLOW_CREDENTIALS cannot be used with CORS_ALLOWED_ORIGINS=*")
        return cls(frozenset(o for o in listed if o != "*"), any_origin, credentials)

    @property
    def enabled(self) -> bool:
        return self.any_origin or bool(self.origins)

    def allows(self, origin: str) -> bool:
        return self.any_origin or origin in self.origins

    def headers(self, origin: str) -> dict[str, str]:
        """What every response to an allowed ``origin`` carries."""
        if self.any_origin and origin not in self.origins:
            return {"Access-Control-Allow-Origin": "*"}
        headers = {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
        if self.allow_credentials:
            headers["Access-Control-Allow-Credentials"] = "true"
        return headers


CORS = web.AppKey("cors", CorsPolicy)


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer pre-flights without authentication; everything else goes on."""
    policy = request.app[CORS]
    origin = request.headers.get(hdrs.ORIGIN)
    if (
        request.method != hdrs.METH_OPTIONS
        or origin is None
        or hdrs.ACCESS_CONTROL_REQUEST_METHOD not in request.headers
    ):
        return await handler(request)
    if not policy.allows(origin):
        raise ApiError(
            403, "cors_origin_not_allowed", f"cross-origin requests from {origin!r} are not allowed"
        )
    requested = request.headers.get(hdrs.ACCESS_CONTROL_REQUEST_HEADERS)
    return web.Response(
        status=204,
        headers={
            **policy.headers(origin),
            "Access-Control-Allow-Methods": ALLOWED_METHODS,
            # Echo what the browser asks for (the SDKs add their own x-stainless-* headers).
            "Access-Control-Allow-Headers": requested or ALLOWED_HEADERS,
            "Access-Control-Max-Age": str(MAX_AGE_SECONDS),
        },
    )


async def cors_on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: the CORS headers on every response to an allowed origin."""
    policy = request.app[CORS]
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is None or not policy.enabled or not policy.allows(origin):
        return
    if hdrs.ACCESS_CONTROL_ALLOW_ORIGIN in response.headers:  # the pre-flight's own
        return
    for name, value in policy.headers(origin).items():
        response.headers.setdefault(name, value)
    response.headers.setdefault("Access-Control-Expose-Headers", EXPOSED_HEADERS)
