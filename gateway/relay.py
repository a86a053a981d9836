"""Running one chat through the broker and relaying its replies, in any wire format.

``relay`` publishes a ChatRequest and answers either a stream (in a :class:`StreamFormat`:
the native SSE events or OpenAI's chunks) or, for non-streaming callers, an :class:`Answer`.
Every accepted request ends with done or an error within its deadline; a client that goes away
gets its generation cancelled.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

import structlog
from aiohttp import web

from broker.messages import Cancel, ChatDone, ChatError, ChatRequest, EmbedRequest, Reply, TokenChunk
from common.http import ApiError, StreamingResponse
from gateway.appkeys import LIFECYCLE, METRICS, PUBLISHER, ROUTER, SETTINGS
from gateway.publisher import NotQueued, QueueFull
from gateway.replies import DeadlineExceeded, Heartbeat, Interrupted, ReplyCursor
from gateway.settings import GatewaySettings

log = structlog.get_logger(__name__)

# Worker error codes -> HTTP status for non-streaming answers.
ERROR_STATUS = {
    "deadline_exceeded": 504,
    "model_busy": 503,
    "model_unavailable": 503,
    "no_model_node": 503,
    "model_not_found": 400,
    "model_rejected_request": 400,  # the node refused what the caller sent (a bad schema, dimensions)
    "generation_interrupted": 502,
}


def not_queued_error(settings: GatewaySettings, exc: NotQueued, what: str) -> ApiError:
    """503 with ``Retry-After``: at capacity (load shedding) or the broker is unreachable."""
    reason = "the service is at capacity" if isinstance(exc, QueueFull) else "the broker is unreachable"
    return ApiError(
        503,
        exc.code,
        f"{what} could not be queued ({reason}); retry shortly",
        headers={"Retry-After": str(settings.busy_retry_after)},
    )


class StreamFormat(Protocol):
    """How replies are written to a streaming client."""

    heartbeat: bytes

    def headers(self) -> dict[str, str]: ...
    def token(self, content: str, seq: int) -> bytes: ...
    def done(self, done: ChatDone, text: str) -> bytes: ...
    def error(self, code: str, message: str) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Answer:
    text: str
    done: ChatDone


async def relay(
    request: web.Request, chat_request: ChatRequest | EmbedRequest, fmt: StreamFormat | None
) -> web.StreamResponse | Answer:
    """Publish ``chat_request`` and relay its answer (a stream when ``fmt`` is given)."""
    app = request.app
    s, metrics, router = app[SETTINGS], app[METRICS], app[ROUTER]
    loop = asyncio.get_running_loop()
    started = loop.time()
    stream_label = "true" if fmt is not None else "false"
    with router.subscribe(chat_request.request_id, chat_request.user_id) as replies:
        try:
            await app[PUBLISHER].publish_request(chat_request, router.address)
        except NotQueued as exc:
            if isinstance(exc, QueueFull):
                metrics.rejected_busy.inc()
            else:
                log.error("publish_failed", error=str(exc))
            metrics.requests.labels(exc.code, chat_request.model, stream_label).inc()
            raise not_queued_error(s, exc, "the chat") from None
        remaining = chat_request.deadline - (chat_request.created_at)
        cursor = ReplyCursor(replies, deadline_monotonic=started + remaining, heartbeat=s.sse_heartbeat)
        run = _Relay(request, chat_request, cursor, started)
        try:
            if fmt is not None:
                return await run.stream(fmt)
            return await run.collect()
        finally:
            elapsed = loop.time() - started
            metrics.duration.labels(stream_label).observe(elapsed)
            metrics.requests.labels(run.outcome, chat_request.model, stream_label).inc()
            log.info(
                "chat_finished",
                outcome=run.outcome,
                model=chat_request.model,
                stream=fmt is not None,
                session_id=chat_request.session_id,
                duration_ms=round(elapsed * 1000, 1),
            )


class _Relay:
    """Relays one request's replies; always ends with done or error, or cancels on disconnect."""

    def __init__(
        self,
        request: web.Request,
        chat_request: ChatRequest | EmbedRequest,
        cursor: ReplyCursor,
        started: float,
    ) -> None:
        self.app = request.app
        self.metrics = request.app[METRICS]
        self.request = request
        self.chat_request = chat_request
        self.cursor = cursor
        self.started = started
        self.outcome = "client_disconnected"
        self._ttft_recorded = False

    def _cancel(self, reason: str) -> None:
        cancel = Cancel(
            request_id=self.chat_request.request_id,
            user_id=self.chat_request.user_id,
            org_id=self.chat_request.org_id,
            reason=reason,  # type: ignore[arg-type]
            trace_id=self.chat_request.trace_id,
        )
        self.metrics.cancels.labels(reason).inc()
        self.app[LIFECYCLE].spawn(self.app[PUBLISHER].cancel(cancel, self.chat_request.deadline))

    def _first_token(self) -> None:
        if not self._ttft_recorded:
            self._ttft_recorded = True
            self.metrics.ttft.observe(asyncio.get_running_loop().time() - self.started)

    async def stream(self, fmt: StreamFormat) -> web.StreamResponse:
        response = StreamingResponse(headers=fmt.headers())
        self.metrics.in_flight.inc()
        seq = 0
        parts: list[str] = []
        # Events of replies that arrived together go out in one socket write: ``out`` holds what
        # is not written yet, and is written before waiting for the next reply.
        out: list[bytes] = []
        try:
            await response.prepare(self.request)
            # aiohttp sends the headers with the first body bytes: start the stream now, so clients
            # and proxies see it open even when the first token is slow.
            await response.write(fmt.heartbeat)
            while True:
                try:
                    reply: Reply | Heartbeat | None = self.cursor.next_nowait() if out else None
                    if reply is None:
                        if out:
                            await response.write(b"".join(out))
                            out.clear()
                        reply = await self.cursor.next()
                except Interrupted:
                    await self._stream_error(
                        response,
                        fmt,
                        "generation_interrupted",
                        "the model worker failed mid-answer; please retry",
                        out,
                    )
                    self._cancel("user_cancelled")
                    return response
                except DeadlineExceeded:
                    await self._stream_error(
                        response, fmt, "deadline_exceeded", "the answer did not finish in time", out
                    )
                    self._cancel("deadline_exceeded")
                    return response
                if isinstance(reply, Heartbeat):
                    await response.write(fmt.heartbeat)
                elif isinstance(reply, TokenChunk):
                    self._first_token()
                    out.append(fmt.token(reply.content, seq))
                    parts.append(reply.content)
                    self.cursor.mark_delivered()
                    seq += 1
                elif isinstance(reply, ChatDone):
                    out.append(fmt.done(reply, "".join(parts)))
                    self.outcome = "ok"
                    await response.write_eof(b"".join(out))
                    return response
                elif isinstance(reply, ChatError):
                    await self._stream_error(response, fmt, reply.error, reply.message, out)
                    return response
        except (asyncio.CancelledError, ConnectionResetError):
            self._cancel("client_disconnected")
            raise
        finally:
            self.metrics.in_flight.dec()

    async def _stream_error(
        self, response: web.StreamResponse, fmt: StreamFormat, code: str, message: str, out: list[bytes]
    ) -> None:
        """End the stream with an error event, after any events not written yet."""
        self.outcome = code
        self.metrics.relay_errors.labels(code).inc()
        await response.write_eof(b"".join([*out, fmt.error(code, message)]))

    async def collect(self) -> Answer:
        parts: list[str] = []
        self.metrics.in_flight.inc()
        try:
            while True:
                try:
                    reply = await self.cursor.next()
                except DeadlineExceeded:
                    self._cancel("deadline_exceeded")
                    self.outcome = "deadline_exceeded"
                    raise ApiError(504, "deadline_exceeded", "the answer did not finish in time") from None
                if self.cursor.take_reset():
                    parts.clear()
                if isinstance(reply, TokenChunk):
                    self._first_token()
                    parts.append(reply.content)
                elif isinstance(reply, ChatDone):
                    self.outcome = "ok"
                    return Answer("".join(parts), reply)
                elif isinstance(reply, ChatError):
                    self.outcome = reply.error
                    self.metrics.relay_errors.labels(reply.error).inc()
                    status = ERROR_STATUS.get(reply.error, 502)
                    retry = (
                        {"Retry-After": str(self.app[SETTINGS].busy_retry_after)} if status == 503 else None
                    )
                    raise ApiError(status, reply.error, reply.message, headers=retry)
        except asyncio.CancelledError:
            self._cancel("client_disconnected")
            raise
        finally:
            self.metrics.in_flight.dec()
