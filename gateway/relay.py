"""Running one chat through the broker and relaying its replies, in any wire format.

``relay`` publishes a ChatRequest and answers either a stream (in a :class:`StreamFormat`:
the native SSE events or OpenAI's chunks) or, for non-streaming callers, an :class:`Answer`.
Every accepted request ends with done or an error within its deadline, and within
``REPLY_STALL_SECONDS`` of its last reply (the watchdog: a worker that died or hangs, or a request
no worker took up, ends with ``generation_stalled`` and a cancel, not minutes of heartbeats).

What the session records (common/exchanges.py): the worker commits the outcome; when this gateway
ends a stream itself (the answer restarted after the client had text, the watchdog, the deadline)
it settles the exchange as ``interrupted`` with exactly the text the client got, and a request it
refused (503, not queued) is withdrawn so that a copy that reached the queue anyway is never
generated or recorded.

Resumable streams (the native ``POST /chat`` stream, see gateway/resume.py): the request's record
was opened by its admission (gateway/admission.py, the same round trip), and a client that goes
away gets its generation cancelled only after ``RESUME_GRACE_SECONDS`` (the worker waits that long
for a Resume before it stops).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Literal, Protocol

import structlog
from aiohttp import web
from redis.exceptions import RedisError

from broker.messages import Cancel, ChatDone, ChatError, ChatRequest, EmbedRequest, Reply, TokenChunk
from common.exchanges import exchange_turns
from common.http import ApiError, StreamingResponse
from gateway.appkeys import LIFECYCLE, METRICS, PUBLISHER, RECORDS, ROUTER, SETTINGS
from gateway.publisher import BrokerUnavailable, NotQueued, QueueFull
from gateway.replies import DeadlineExceeded, Heartbeat, Interrupted, ReplyCursor, Stalled, Superseded
from gateway.settings import GatewaySettings

log = structlog.get_logger(__name__)

# Worker error codes -> HTTP status for non-streaming answers.
ERROR_STATUS = {
    "deadline_exceeded": 504,
    "model_busy": 503,
    "model_unavailable": 503,
    "no_model_node": 503,
    "store_unavailable": 503,  # the worker could not read or record the session (Redis away)
    "model_not_found": 400,
    "model_rejected_request": 400,  # the node refused what the caller sent (a bad schema, dimensions)
    "generation_interrupted": 502,
    "generation_stalled": 504,
}

# The errors this gateway ends a stream with itself: (code, message, cancel reason).
STALLED = ("generation_stalled", "the model worker stopped answering; please retry", "stalled")
DEADLINE = ("deadline_exceeded", "the answer did not finish in time", "deadline_exceeded")
INTERRUPTED = ("generation_interrupted", "the model worker failed mid-answer; please retry", "user_cancelled")


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
    """How replies are written to a streaming client; ``seq`` is the event's number in the stream
    (tokens 0, 1, ..., the final event the next one). ``resumable`` formats get the resume
    contract (record, grace period, ``X-Chat-Request-Id``)."""

    heartbeat: bytes
    resumable: bool

    def headers(self) -> dict[str, str]: ...
    def token(self, content: str, seq: int) -> bytes: ...
    def done(self, done: ChatDone, text: str, seq: int) -> bytes: ...
    def error(self, code: str, message: str, seq: int) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Answer:
    text: str
    done: ChatDone


@dataclass(frozen=True, slots=True)
class Owner:
    """Whose request a relay serves: the ids a cancel names, and until when anyone waits."""

    request_id: str
    user_id: str
    org_id: str
    trace_id: str
    deadline: float  # Unix time

    @classmethod
    def of(cls, request: ChatRequest | EmbedRequest) -> Owner:
        return cls(request.request_id, request.user_id, request.org_id, request.trace_id, request.deadline)


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
            if isinstance(exc, BrokerUnavailable) and isinstance(chat_request, ChatRequest):
                await _withdraw(app, chat_request)
            metrics.requests.labels(exc.code, chat_request.model, stream_label).inc()
            raise not_queued_error(s, exc, "the chat") from None
        remaining = chat_request.deadline - (chat_request.created_at)
        cursor = ReplyCursor(
            replies, deadline_monotonic=started + remaining, heartbeat=s.sse_heartbeat, stall=s.reply_stall
        )
        run = Relay(
            request,
            Owner.of(chat_request),
            cursor,
            started,
            chat_request=chat_request if isinstance(chat_request, ChatRequest) else None,
        )
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


async def _withdraw(app: web.Application, chat_request: ChatRequest) -> None:
    """The client is told 503, yet the request may have reached the queue (the confirm was lost):
    withdraw it, so that it is never generated, and never recorded (common/exchanges.py)."""
    try:
        await app[RECORDS].settle(
            user_id=chat_request.user_id,
            org_id=chat_request.org_id,
            request_id=chat_request.request_id,
            state="withdrawn",
            generation="",
            parts=[],
            final=None,
            session_id=chat_request.session_id,
            turns=None,
            ttl=chat_request.deadline - time.time() + app[SETTINGS].common.resume_record_seconds,
        )
    except RedisError as exc:
        log.error("withdraw_failed", request_id=chat_request.request_id, error=repr(exc))


class Relay:
    """Relays one request's replies; always ends with done or error, or cancels on disconnect.

    ``chat_request`` is the request as published (None for a resumed stream, which this gateway
    did not start and whose session it does not settle)."""

    def __init__(
        self,
        request: web.Request,
        owner: Owner,
        cursor: ReplyCursor,
        started: float,
        *,
        chat_request: ChatRequest | None = None,
    ) -> None:
        self.app = request.app
        self.metrics = request.app[METRICS]
        self.request = request
        self.owner = owner
        self.chat_request = chat_request
        self.cursor = cursor
        self.started = started
        self.outcome = "client_disconnected"
        self._ttft_recorded = False

    def _cancel(self, reason: str, grace: float = 0.0) -> None:
        owner = self.owner
        cancel = Cancel(
            request_id=owner.request_id,
            user_id=owner.user_id,
            org_id=owner.org_id,
            reason=reason,  # type: ignore[arg-type]
            trace_id=owner.trace_id,
            grace=grace,
            reply_to=self.app[ROUTER].address,
        )
        self.metrics.cancels.labels(reason).inc()
        self.app[LIFECYCLE].spawn(self.app[PUBLISHER].cancel(cancel, owner.deadline))

    def _first_token(self) -> None:
        if not self._ttft_recorded:
            self._ttft_recorded = True
            self.metrics.ttft.observe(asyncio.get_running_loop().time() - self.started)

    async def _settle(
        self,
        parts: list[str],
        code: str,
        message: str,
        state: Literal["interrupted", "failed"] = "interrupted",
    ) -> None:
        """The session says what the client saw: ``parts`` (as sent), then this error."""
        chat_request = self.chat_request
        if chat_request is None:
            return
        error = ChatError(
            request_id=chat_request.request_id,
            user_id=chat_request.user_id,
            org_id=chat_request.org_id,
            generation=self.cursor.generation or "",
            error=code,
            message=message,
        )
        text = "".join(parts)
        record = bool(chat_request.session_id) and chat_request.record and bool(text)
        try:
            await self.app[RECORDS].settle(
                user_id=chat_request.user_id,
                org_id=chat_request.org_id,
                request_id=chat_request.request_id,
                state=state,
                generation=self.cursor.generation or "",
                parts=parts,
                final=error,
                session_id=chat_request.session_id if chat_request.record else None,
                turns=exchange_turns(chat_request, text, state, finish_reason=code) if record else None,
                ttl=chat_request.deadline - time.time() + self.app[SETTINGS].common.resume_record_seconds,
            )
        except RedisError as exc:
            log.error("settle_failed", request_id=chat_request.request_id, error=repr(exc))

    async def stream(self, fmt: StreamFormat) -> web.StreamResponse:
        headers = fmt.headers()
        if fmt.resumable:
            headers["X-Chat-Request-Id"] = self.owner.request_id
        response = StreamingResponse(headers=headers)
        self.metrics.in_flight.inc()
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
                except Superseded:
                    # A resume of this request on this gateway took its replies over (this
                    # client's connection is gone, though the server had not noticed yet).
                    self.outcome = "resumed_elsewhere"
                    return response
                except (Interrupted, Stalled, DeadlineExceeded) as exc:
                    code, message, reason = (
                        INTERRUPTED
                        if isinstance(exc, Interrupted)
                        else STALLED
                        if isinstance(exc, Stalled)
                        else DEADLINE
                    )
                    await self._settle(parts, code, message)
                    await self._stream_error(response, fmt, code, message, out)
                    self._cancel(reason)
                    return response
                if isinstance(reply, Heartbeat):
                    await response.write(fmt.heartbeat)
                elif isinstance(reply, TokenChunk):
                    self._first_token()
                    out.append(fmt.token(reply.content, reply.seq))
                    parts.append(reply.content)
                    self.cursor.mark_delivered()
                elif isinstance(reply, ChatDone):
                    if reply.chunks >= self.cursor.next_seq:  # not already had (a resumed stream)
                        out.append(fmt.done(reply, "".join(parts), reply.chunks))
                    self.outcome = "ok"
                    await response.write_eof(b"".join(out))
                    return response
                elif isinstance(reply, ChatError):
                    # What the client got may be less than the worker sent (lost frames).
                    await self._settle(parts, reply.error, reply.message, "failed")
                    await self._stream_error(response, fmt, reply.error, reply.message, out)
                    return response
        except (asyncio.CancelledError, ConnectionResetError):
            # The client (or this gateway) went away: a resumable stream's generation goes on for
            # the grace period, so a resume on any gateway can claim it.
            self._cancel("client_disconnected", self.app[SETTINGS].resume_grace if fmt.resumable else 0.0)
            raise
        finally:
            self.metrics.in_flight.dec()

    async def _stream_error(
        self, response: web.StreamResponse, fmt: StreamFormat, code: str, message: str, out: list[bytes]
    ) -> None:
        """End the stream with an error event, after any events not written yet."""
        self.outcome = code
        self.metrics.relay_errors.labels(code).inc()
        await response.write_eof(b"".join([*out, fmt.error(code, message, self.cursor.next_seq)]))

    async def collect(self) -> Answer:
        parts: list[str] = []
        self.metrics.in_flight.inc()
        try:
            while True:
                try:
                    reply = await self.cursor.next()
                except (Stalled, DeadlineExceeded) as exc:
                    code, message, reason = STALLED if isinstance(exc, Stalled) else DEADLINE
                    await self._settle([], code, message)
                    self._cancel(reason)
                    self.outcome = code
                    raise ApiError(ERROR_STATUS[code], code, message) from None
                if self.cursor.take_reset():
                    parts.clear()
                if isinstance(reply, TokenChunk):
                    self._first_token()
                    parts.append(reply.content)
                elif isinstance(reply, ChatDone):
                    self.outcome = "ok"
                    return Answer("".join(parts), reply)
                elif isinstance(reply, ChatError):
                    await self._settle([], reply.error, reply.message, "failed")
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
