"""HTTP building blocks every aiohttp service shares: JSON errors, security headers, JSON bodies.

Every error a client sees is ``{"error": "<machine_code>", "message": "<for humans>"}`` with the
right status. Handlers either return :func:`json_error` or raise :class:`ApiError`;
:func:`error_middleware` turns aiohttp's own ``HTTPException``s (404, 405, 413 from
``client_max_size`` ...) and unexpected exceptions into the same shape (500 ``internal_error``,
logged with its stack); :func:`make_error_middleware` also maps a backing service's errors (e.g.
``RedisError``) to 503 ``unavailable``.

Request bodies are read through :func:`read_json`: bad bytes of any kind (invalid UTF-8, nesting
deeper than the decoder's recursion limit) are 400 ``malformed_json``, never a 500, and a body that
does not arrive in time (:class:`RequestTimeout`, raised by the read deadline of
:mod:`common.server`) is 408 ``request_timeout``. Responses are ``Cache-Control: no-store`` unless
their handler chose a caching policy (:func:`no_store_on_prepare`).

Install the middlewares outermost first, so error responses get the security headers too::

    web.Application(middlewares=[security_headers_middleware, error_middleware])

A streaming handler prepares its response before the middleware sees it; such apps also append
:func:`security_headers_on_prepare` to ``app.on_response_prepare``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import msgspec
import structlog
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

__all__ = [
    "SECURITY_HEADERS",
    "ApiError",
    "RequestTimeout",
    "StreamingResponse",
    "client_address",
    "error_code",
    "error_middleware",
    "json_error",
    "json_response",
    "make_error_middleware",
    "no_store_on_prepare",
    "query_int",
    "read_json",
    "security_headers_middleware",
    "security_headers_on_prepare",
]

T = TypeVar("T")

log = structlog.get_logger(__name__)

SECURITY_HEADERS: Mapping[str, str] = {
    "Strict-Transport-Security": "max-age=63072000; includeSubDomains",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
}

# Machine codes for errors aiohttp raises itself (routing, body size, methods).
_STATUS_CODES: Mapping[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "request_timeout",
    409: "conflict",
    411: "length_required",
    413: "body_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    422: "unprocessable_entity",
    429: "too_many_requests",
    431: "headers_too_large",
    500: "internal_error",
    501: "not_implemented",
    502: "bad_gateway",
    503: "unavailable",
    504: "gateway_timeout",
}

# Headers of an HTTPException that describe its own (replaced) body rather than the response.
_BODY_HEADERS = frozenset({"content-type", "content-length", "content-encoding"})

_encoder = msgspec.json.Encoder()


class RequestTimeout(TimeoutError):
    """The request body did not arrive within the server's read deadline.

    :mod:`common.server` raises it into whatever reads the body. It is a ``TimeoutError`` so that
    aiohttp's lingering read of a body nobody read stops on it quietly (instead of logging an
    unhandled exception), and it is answered before any ``OSError`` ("unavailable") mapping.
    """


class ApiError(Exception):
    """Raise from a handler (or anything it calls) to answer with a JSON error."""

    def __init__(
        self, status: int, code: str, message: str, *, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers) if headers else {}


def error_code(status: int) -> str:
    """The machine code for an HTTP error status (``404`` -> ``"not_found"``)."""
    return _STATUS_CODES.get(status, "internal_error" if status >= 500 else "bad_request")


class StreamingResponse(web.StreamResponse):
    """A ``StreamResponse`` whose headers leave with its first body bytes, in one socket write
    (aiohttp's default writes them alone at ``prepare``): one system call less per stream."""

    _send_headers_immediately = False


def json_response(data: Any, *, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    """A JSON response encoded with msgspec (structs, dicts, lists ...)."""
    return web.Response(
        body=_encoder.encode(data), status=status, headers=headers, content_type="application/json"
    )


def json_error(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    """The one error shape: ``{"error": code, "message": message}`` with ``status``."""
    return json_response({"error": code, "message": message}, status=status, headers=headers)


def _apply_security_headers(response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


@web.middleware
async def security_headers_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Add :data:`SECURITY_HEADERS` to every response (existing values win)."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        # Without error_middleware inside, aiohttp's exceptions are responses too.
        _apply_security_headers(exc)
        raise
    if not response.prepared:
        _apply_security_headers(response)
    return response


async def security_headers_on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare`` hook: covers streamed responses the middleware sees too late."""
    _apply_security_headers(response)


async def no_store_on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare`` hook: ``Cache-Control: no-store`` unless the handler set a policy.

    API answers are per-user (sessions, tokens, jobs, streamed chats) and must not be kept by a
    browser or an intermediary; a handler that wants caching (the JWKS document) says so itself.
    """
    response.headers.setdefault(hdrs.CACHE_CONTROL, "no-store")


def _from_http_exception(exc: web.HTTPException) -> web.Response:
    headers = {k: v for k, v in exc.headers.items() if k.lower() not in _BODY_HEADERS}
    code = error_code(exc.status)
    text = exc.text or ""
    message = exc.reason if text in {"", f"{exc.status}: {exc.reason}"} else text
    if exc.status == 413:
        message = "request body too large"
    elif exc.content_type == "application/json":  # already our shape: keep its code and message
        try:
            body = msgspec.json.decode(text)
        except msgspec.DecodeError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            code, message = body["error"], str(body.get("message", message))
    return json_error(exc.status, code, message, headers)


def make_error_middleware(
    *,
    unavailable: tuple[type[Exception], ...] = (),
    invalid_input: tuple[type[Exception], ...] = (),
    on_unhandled: Callable[[Exception], None] | None = None,
) -> Middleware:
    """An :func:`error_middleware` that also answers ``unavailable`` exceptions (a backing
    service such as Redis being down) with 503 ``unavailable`` and ``Retry-After`` instead of 500,
    ``invalid_input`` exceptions (a store refusing a value the client sent, such as a NUL
    character in PostgreSQL text) with 400 ``invalid_input``, and reports unexpected exceptions to
    ``on_unhandled`` (error tracking: count by type).
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            return json_error(exc.status, exc.code, exc.message, exc.headers)
        except web.HTTPException as exc:
            if exc.status < 400:  # redirects and the like are not errors
                raise
            return _from_http_exception(exc)
        except RequestTimeout as exc:  # before `unavailable`: a TimeoutError is an OSError too
            return _request_timeout(exc)
        except invalid_input as exc:
            log.info("invalid_input_refused", path=request.path, error_type=type(exc).__name__)
            return json_error(
                400, "invalid_input", "a value in the request cannot be stored (for example a NUL character)"
            )
        except unavailable as exc:
            # The type and the underlying cause say which dependency failed and how (an intermittent
            # 503 is otherwise hard to trace back: a pool timeout, a reset, a refused connect).
            cause = exc.__cause__ or exc.__context__
            log.warning(
                "dependency_unavailable",
                path=request.path,
                error_type=type(exc).__name__,
                error=repr(exc),
                cause=repr(cause) if cause is not None else None,
            )
            return json_error(503, "unavailable", "a backing service is unavailable", {"Retry-After": "1"})
        except Exception as exc:  # CancelledError is a BaseException and passes through untouched
            log.exception(
                "unhandled_error", method=request.method, path=request.path, error_type=type(exc).__name__
            )
            if on_unhandled is not None:
                on_unhandled(exc)
            return json_error(500, "internal_error", "internal server error")

    return middleware


error_middleware = make_error_middleware()
"""Turn every error into the JSON error shape; never leak a traceback to the client."""


def _request_timeout(exc: RequestTimeout) -> web.Response:
    response = json_error(408, "request_timeout", str(exc) or "the request was not received in time")
    response.force_close()  # the rest of the body is still on its way; do not wait for it
    return response


def _is_json_content_type(content_type: str) -> bool:
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


async def read_json(request: web.Request, model: type[T]) -> T:
    """Decode the request body strictly into ``model`` (a msgspec Struct or any msgspec type).

    A missing Content-Type is tolerated; an explicit non-JSON one is 415. The size limit is the
    app's ``client_max_size`` (413 ``body_too_large`` via :func:`error_middleware`), the time limit
    the server's read deadline (408 ``request_timeout``). Malformed JSON is 400 ``malformed_json``;
    a valid document of the wrong shape is 400 ``invalid_request``.
    """
    if request.content_type not in {"", "application/octet-stream"} and not _is_json_content_type(
        request.content_type
    ):
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    try:
        body = await request.read()
    except RequestTimeout as exc:  # aiohttp closes the connection: the body was never finished
        raise ApiError(408, "request_timeout", str(exc)) from None
    except web.RequestPayloadError:  # e.g. "Content-Encoding: gzip" on a body that is not gzip
        raise ApiError(
            400, "malformed_body", "the request body cannot be read in its declared Content-Encoding"
        ) from None
    if not body:
        raise ApiError(400, "malformed_json", "request body is empty; send a JSON object")
    try:
        return msgspec.json.decode(body, type=model, strict=True)
    except msgspec.ValidationError as exc:
        raise ApiError(400, "invalid_request", str(exc)) from None
    except msgspec.DecodeError:
        raise ApiError(400, "malformed_json", "request body is not valid JSON") from None
    except UnicodeDecodeError:  # msgspec reports invalid UTF-8 inside a string this way
        raise ApiError(400, "malformed_json", "request body is not valid UTF-8") from None
    except RecursionError:  # the decoder recurses per nesting level: ~1,000 levels exhaust it
        raise ApiError(400, "malformed_json", "request body is nested too deeply") from None


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_address(
    request: web.Request, *, trusted_proxies: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network] = ()
) -> str:
    """The client's IP address, for throttling and logs.

    ``X-Forwarded-For`` is believed only as far as trusted proxies wrote it: starting from the TCP
    peer, while the address at hand is inside ``trusted_proxies``, step to the entry that proxy
    appended (walking the header from the right). The first address that is not a trusted proxy
    is the client. So a peer that is not a trusted proxy is the client whatever it sends, entries a
    client wrote itself are never reached, and a chain of proxies (CDN -> HAProxy) works when all
    are listed. An unparseable entry stops the walk at the proxy that passed it on. IPv4-mapped
    IPv6 addresses are reported as IPv4.
    """
    peer = request.remote or "unknown"
    address = _ip(peer)
    if address is None:
        return peer
    entries = [
        item
        for header in request.headers.getall(hdrs.X_FORWARDED_FOR, [])
        for item in header.split(",")
        if item.strip()
    ]
    while entries and any(address in network for network in trusted_proxies):
        forwarded = _ip(entries.pop())
        if forwarded is None:
            break
        address = forwarded
    return str(address)


def query_int(request: web.Request, name: str, default: int, *, minimum: int = 0, maximum: int) -> int:
    """An integer query parameter in ``[minimum, maximum]``, else 400 ``invalid_parameter``.

    ASCII digits only: ``str.isdigit()`` also accepts "²" (which ``int()`` refuses) and "٣" or
    full-width "１" (which it reads), so a client could not predict what is accepted.
    """
    raw = request.query.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or not minimum <= int(raw) <= maximum:
        raise ApiError(400, "invalid_parameter", f"{name} must be an integer between {minimum} and {maximum}")
    return int(raw)
