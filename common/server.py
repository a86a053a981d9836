"""Serving an aiohttp app the way every service here is served: :class:`ServiceRunner`.

aiohttp answers some requests before any middleware runs, and has no hook for them
(aio-libs/aiohttp#3287): a request its HTTP parser rejects (an unknown method such as ``FOO``, a
malformed header, bytes that are not HTTP) gets a ``text/plain`` 400 that echoes the offending
request line, with the ``Server: Python/x aiohttp/y`` banner. Nor does it bound the time a client
may take to send a request: headers or a body sent one byte a second hold a connection, and the
handler waiting for that body, for as long as the client likes (slowloris). The runner closes
both gaps with its own request handler (the per-connection protocol):

- errors of the protocol itself use the API's shape ``{"error", "message"}``: JSON, the security
  headers, nothing of the input echoed, the connection closed. A parser error is 400
  ``bad_request``; an unknown method 405 ``method_not_allowed``;
- a request's headers must be complete ``read_timeout`` seconds after the connection opened or,
  on a kept-alive connection, after the request's first byte; otherwise 408 ``request_timeout``
  and the connection is closed (the idle time between requests is aiohttp's keep-alive timeout);
- its body must be complete ``read_timeout`` seconds after its headers: whatever reads it then
  gets :class:`common.http.RequestTimeout` (408 through :func:`common.http.read_json` or the
  error middleware), and a body nobody reads is not waited for any longer either;
- no response carries the ``Server`` banner.

Everything else is aiohttp's ``AppRunner``; :func:`common.runtime.serving` uses this runner, and so
do the in-process servers of the tests.
"""

from __future__ import annotations

import asyncio
import sys
from http import HTTPStatus
from typing import Any

import msgspec
import structlog
from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_exceptions import BadHttpMethod
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader

from common.http import SECURITY_HEADERS, RequestTimeout, error_code
from common.settings import DEFAULT_HTTP_READ_TIMEOUT

__all__ = ["ServiceRunner", "drop_server_banner"]

log = structlog.get_logger(__name__)

_encoder = msgspec.json.Encoder()

_MESSAGES = {
    400: "malformed HTTP request",
    405: "this request method is not supported",
    500: "internal server error",
}


def _body_timeout_message(seconds: float) -> str:
    return f"the request body was not received within {seconds:g} s"


async def drop_server_banner(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare`` hook: no ``Server`` header (aiohttp adds its version there)."""
    response.headers.popall(hdrs.SERVER, None)


class _ErrorResponse(web.Response):
    """A response to a request the app never saw. aiohttp adds its ``Server`` banner while
    preparing the headers and runs no ``on_response_prepare`` hook for these, so it is taken out
    here."""

    async def _prepare_headers(self) -> None:
        await super()._prepare_headers()
        self.headers.popall(hdrs.SERVER, None)


def _timeout_response(seconds: float) -> bytes:
    """The raw 408 sent when the headers are late (no request object exists yet)."""
    body = _encoder.encode(
        {"error": "request_timeout", "message": f"the request headers were not received within {seconds:g} s"}
    )
    lines = [
        "HTTP/1.1 408 Request Timeout",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in SECURITY_HEADERS.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _expire_body(payload: StreamReader, seconds: float) -> None:
    if not payload.is_eof():
        payload.set_exception(RequestTimeout(_body_timeout_message(seconds)))


class _ServiceRequestHandler(web.RequestHandler):
    """aiohttp's protocol with JSON protocol errors and a deadline for request headers.

    The deadline reads two attributes of the base class (``_waiter``: the protocol waits for the
    next request; ``_messages``: parsed requests not yet handled); aiohttp offers no public view.
    """

    __slots__ = ("_head_deadline", "_read_timeout", "_timeout_bytes")

    def __init__(
        self, manager: web.Server, *, read_timeout: float, timeout_bytes: bytes, **kwargs: Any
    ) -> None:
        super().__init__(manager, **kwargs)
        self._read_timeout = read_timeout
        self._timeout_bytes = timeout_bytes
        self._head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm_head_deadline()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # Bytes arrived but no complete request: the head of a new request has begun.
        if data and self._head_deadline is None and self._waiting_for_head():
            self._arm_head_deadline()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.head_received()
        super().connection_lost(exc)

    def head_received(self) -> None:
        """A request's headers are complete (called as its request object is made)."""
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _waiting_for_head(self) -> bool:
        waiter = self._waiter
        return waiter is not None and not waiter.done() and not self._messages

    def _arm_head_deadline(self) -> None:
        self._head_deadline = self._loop.call_later(self._read_timeout, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        transport = self.transport
        if transport is None or not self._waiting_for_head():
            return  # a request is being handled; its body has a deadline of its own
        peer = self.peername
        remote = peer[0] if isinstance(peer, tuple) else peer
        log.info("http_request_rejected", status=408, reason="headers_timeout", remote=remote)
        transport.write(self._timeout_bytes)
        self.force_close()  # closes the transport once the 408 is flushed

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """The API's error shape for whatever the app never answered: parser errors, a body that
        timed out past a handler without an error middleware (aiohttp would call it a 504; it
        passes no exception then, hence the look at the one being handled), unhandled errors."""
        exc = exc if exc is not None else sys.exc_info()[1]
        if isinstance(exc, RequestTimeout):
            status = 408
        elif isinstance(exc, BadHttpMethod):
            status = 405
        if status >= 500:
            self.log_exception("Error handling request", exc_info=exc)
        else:  # the input (aiohttp's message quotes it) is neither logged nor echoed
            log.info(
                "http_request_rejected",
                status=status,
                reason=type(exc).__name__ if exc is not None else None,
                remote=request.remote,
            )
        if request.writer.output_size > 0:
            raise ConnectionError("the response has started; cannot send an error response")
        if status == 408:
            text = str(exc) or _body_timeout_message(self._read_timeout)
        else:
            text = _MESSAGES.get(status) or HTTPStatus(status).phrase
        response = _ErrorResponse(
            body=_encoder.encode({"error": error_code(status), "message": text}),
            status=status,
            content_type="application/json",
            headers=SECURITY_HEADERS,
        )
        response.force_close()
        return response


class _ServiceServer(web.Server):
    """The app's ``web.Server`` with :class:`_ServiceRequestHandler` connections and a body deadline
    armed for every request whose body is not complete when its handler starts."""

    def __init__(self, plain: web.Server, *, read_timeout: float) -> None:
        self._app_request_factory = plain.request_factory
        self._read_timeout = read_timeout
        self._timeout_bytes = _timeout_response(read_timeout)
        # aiohttp keeps the loop and the protocol options in these two attributes, nowhere public.
        super().__init__(
            plain.request_handler,
            request_factory=self._make_request_with_deadline,
            handler_cancellation=plain.handler_cancellation,
            loop=plain._loop,
            **plain._kwargs,
        )

    def __call__(self) -> web.RequestHandler:
        return _ServiceRequestHandler(
            self,
            loop=self._loop,
            read_timeout=self._read_timeout,
            timeout_bytes=self._timeout_bytes,
            **self._kwargs,
        )

    def _make_request_with_deadline(
        self,
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: web.RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        if isinstance(protocol, _ServiceRequestHandler):
            protocol.head_received()
        if not payload.is_eof():
            timer = self._loop.call_later(self._read_timeout, _expire_body, payload, self._read_timeout)
            payload.on_eof(timer.cancel)
        return self._app_request_factory(message, payload, protocol, writer, task)


class ServiceRunner(web.AppRunner):
    """``web.AppRunner`` serving through :class:`_ServiceServer` (see the module docstring).

    ``read_timeout``: seconds for a request's headers, and again for its body
    (``HTTP_READ_TIMEOUT_SECONDS``, :attr:`common.settings.CommonSettings.http_read_timeout`).
    """

    __slots__ = ("_read_timeout",)

    def __init__(
        self, app: web.Application, *, read_timeout: float = DEFAULT_HTTP_READ_TIMEOUT, **kwargs: Any
    ) -> None:
        if read_timeout <= 0:
            raise ValueError("read_timeout must be positive")
        super().__init__(app, **kwargs)
        self._read_timeout = read_timeout
        app.on_response_prepare.append(drop_server_banner)

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # starts and freezes the app
        return _ServiceServer(plain, read_timeout=self._read_timeout)
