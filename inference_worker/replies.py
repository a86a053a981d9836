"""Where a worker's replies go: :class:`ReplyBatcher`, one per worker, gathers the replies of all
its running generations per reply queue (one :class:`~inference_worker.outbox.Outbox` each) and
flushes them on one ticker; :class:`ReplyStream` is one attempt's side of it.

What leaves when (``interval`` = ``CHUNK_FLUSH_MS``):
- an attempt's **first text** is published at once (time to first token is not delayed by the
  tick), and so are its **done** and **error** (completion is not delayed either, and the request
  is acked only once its outcome is published);
- other text waits for the next tick, coalesced per attempt into frames of up to ``max_chars``
  (``CHUNK_MAX_CHARS``); the ticker runs only while some outbox holds frames;
- ``interval`` 0 publishes every text as soon as the publisher task runs.

Requests with ``reply_mode = "batch"`` (the gateway's) get one :class:`~broker.messages.ReplyBatch`
message per flush per reply queue, so reply-path messages per second are about workers x gateways
/ tick plus what the first tokens and outcomes add (and those share messages while a publish is in
flight), independent of the number of streams. Requests without it (integrators' default
``"message"``) go through the same buffers and ticker, one broker message per frame, with
``correlation_id`` = request id.

Async jobs have no reply queue: their streams publish nothing (the job record holds the outcome).

Liveness and resume (batch mode, the gateway's): every ``alive_interval`` (``WORKER_ALIVE_SECONDS``)
an attempt that published nothing for that long gets an :class:`~broker.messages.Alive` frame, so
the gateway's watchdog tells a slow generation (a long time to first token, a slow model) from a
dead worker. :meth:`ReplyStream.repoint` (a :class:`~broker.messages.Resume`) moves an attempt's
replies to another reply queue and replays its text frames from the requested ``seq`` out of the
attempt's buffer, then its done or error if it has one.
"""

from __future__ import annotations

import asyncio

from aio_pika.abc import AbstractExchange

from broker.messages import ChatDone, ChatError, ChatRequest, EmbedRequest, Reply, ReplyMode, ToolCall, Usage
from inference_worker.metrics import WorkerMetrics
from inference_worker.outbox import Attempt, Outbox, RepliesLost

__all__ = ["RepliesLost", "ReplyBatcher", "ReplyStream"]

# An outbox unused this long is dropped (its reply queue's gateway or integrator may be gone).
OUTBOX_IDLE_SECONDS = 60.0


class ReplyBatcher:
    """A worker's reply path: outboxes by (reply queue, reply mode), flushed by one ticker task.
    ``start()`` it once, ``close()`` it after the generations finished (it publishes what is left)."""

    def __init__(
        self,
        exchange: AbstractExchange,
        *,
        interval: float,
        max_chars: int,
        metrics: WorkerMetrics,
        alive_interval: float = 5.0,
    ) -> None:
        self._exchange = exchange
        self.interval = interval
        self._max_chars = max_chars
        self._metrics = metrics
        self._alive_interval = alive_interval
        self._outboxes: dict[tuple[str, ReplyMode], Outbox] = {}
        self._work = asyncio.Event()
        self._ticker: asyncio.Task[None] | None = None
        self._alive_ticker: asyncio.Task[None] | None = None
        self.live: set[ReplyStream] = set()  # attempts a gateway relays (batch mode), not ended

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.interval > 0 and self._ticker is None:
            self._ticker = loop.create_task(self._tick())
        if self._alive_interval > 0 and self._alive_ticker is None:
            self._alive_ticker = loop.create_task(self._keep_alive())

    async def close(self) -> None:
        tickers, self._ticker, self._alive_ticker = (self._ticker, self._alive_ticker), None, None
        for ticker in tickers:
            if ticker is not None:
                ticker.cancel()
                await asyncio.gather(ticker, return_exceptions=True)
        outboxes = list(self._outboxes.values())
        self._outboxes.clear()
        await asyncio.gather(*(outbox.close() for outbox in outboxes))

    def stream(
        self,
        request: ChatRequest | EmbedRequest,
        reply_to: str,
        attempt_id: str,
        *,
        redelivered: bool = False,
    ) -> ReplyStream:
        """The replies of one attempt at ``request`` (``reply_to`` empty: an async job); release
        it with :meth:`ReplyStream.release` when the attempt ends."""
        stream = ReplyStream(self, request, reply_to, attempt_id, redelivered=redelivered)
        if reply_to and request.reply_mode == "batch":
            self.live.add(stream)
        return stream

    async def refuse(
        self, reply_to: str, mode: ReplyMode, error: ChatError, *, correlation_id: str, trace_id: str = ""
    ) -> None:
        """Publish the one reply of a request that was refused before it was taken up
        (inference_worker/admission.py); returns once it is published, else raises
        :class:`RepliesLost`."""
        attempt = Attempt(
            request_id=error.request_id,
            user_id=error.user_id,
            org_id=error.org_id,
            attempt_id=error.generation,
            trace_id=trace_id,
            correlation_id=correlation_id,
            last_frame=asyncio.get_running_loop().time(),
        )
        outbox = self.outbox(reply_to, mode)
        outbox.add_final(attempt, error)
        await outbox.flush()

    async def _keep_alive(self) -> None:
        """Every ``alive_interval``: an Alive frame for each live attempt silent that long."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._alive_interval)
            quiet_since = loop.time() - self._alive_interval
            for stream in list(self.live):
                stream.keep_alive(quiet_since)

    def outbox(self, reply_to: str, mode: ReplyMode) -> Outbox:
        key = (reply_to, mode)
        outbox = self._outboxes.get(key)
        if outbox is None:
            outbox = Outbox(
                self._exchange,
                reply_to,
                mode,
                max_chars=self._max_chars,
                metrics=self._metrics,
                on_pending=self._work.set,
            )
            self._outboxes[key] = outbox
        return outbox

    async def _tick(self) -> None:
        """Every ``interval`` while there is work: wake every outbox holding frames."""
        loop = asyncio.get_running_loop()
        while True:
            await self._work.wait()
            await asyncio.sleep(self.interval)
            # Cleared before waking: a frame added after its outbox took its batch sets it again.
            self._work.clear()
            now = loop.time()
            for key, outbox in list(self._outboxes.items()):
                if outbox.pending:
                    outbox.wake()
                elif now - outbox.last_active > OUTBOX_IDLE_SECONDS:
                    del self._outboxes[key]
                    await outbox.close()


class ReplyStream:
    """One attempt's replies: text as it is generated, then one done or error. ``chunks`` is how
    many text frames it made (the ``seq`` values 0..chunks-1, and ``ChatDone.chunks``).

    :meth:`token` and :meth:`done` raise :class:`RepliesLost` once a frame of this attempt could
    not be published (the answer would have a hole); :meth:`error` still tries, and raises only
    when the error itself is not published."""

    def __init__(
        self,
        batcher: ReplyBatcher,
        request: ChatRequest | EmbedRequest,
        reply_to: str,
        attempt_id: str,
        *,
        redelivered: bool = False,
    ) -> None:
        self._batcher = batcher
        self._request = request
        self._reply_to = reply_to
        self.redelivered = redelivered
        self.attempt = Attempt(
            request_id=request.request_id,
            user_id=request.user_id,
            org_id=request.org_id,
            attempt_id=attempt_id,
            trace_id=request.trace_id,
            last_frame=asyncio.get_running_loop().time(),
        )

    @property
    def reply_to(self) -> str:
        return self._reply_to

    def release(self) -> None:
        """The attempt ended: no more liveness frames, no resume."""
        self._batcher.live.discard(self)

    def keep_alive(self, quiet_since: float) -> None:
        """An Alive frame when the attempt published nothing since ``quiet_since``."""
        attempt = self.attempt
        if attempt.final is None and attempt.last_frame <= quiet_since:
            self._outbox().add_ready(attempt, attempt.alive())

    def repoint(self, reply_to: str, from_seq: int) -> None:
        """Send this attempt's replies to ``reply_to`` from now on, after its text frames from
        ``from_seq`` (and its done or error, if it has one) replayed from the buffer.

        Refused with an error frame to ``reply_to`` when the buffer overflowed, or when this
        attempt is a redelivery and the client already has text (which may be another attempt's).
        """
        attempt = self.attempt
        if self not in self._batcher.live:
            return
        target = self._batcher.outbox(reply_to, "batch")
        if not attempt.replayable or (self.redelivered and from_seq > 0):
            code = "resume_unavailable" if not attempt.replayable else "generation_interrupted"
            target.add_ready(attempt, self._error_reply(code, "the answer cannot be resumed; please retry"))
            target.wake()
            return
        self._outbox().seal(attempt)
        self._reply_to = reply_to
        attempt.failure = None  # what was lost on the old queue is replayed to the new one
        for chunk in attempt.replay(from_seq):
            target.add_ready(attempt, chunk)
        if attempt.final is not None:
            target.add_ready(attempt, attempt.final)
        target.wake()

    async def replay(self, frames: list[Reply]) -> None:
        """Publish prebuilt frames (a redelivered request answered from its record)."""
        if not self._reply_to or not frames:
            return
        outbox = self._outbox()
        for frame in frames:
            outbox.add_ready(self.attempt, frame)
        await outbox.flush()

    def _error_reply(self, code: str, message: str) -> ChatError:
        request = self._request
        return ChatError(
            request_id=request.request_id,
            user_id=request.user_id,
            org_id=request.org_id,
            generation=self.attempt.attempt_id,
            error=code,
            message=message,
        )

    @property
    def chunks(self) -> int:
        return self.attempt.chunks

    async def token(self, text: str) -> None:
        """Add generated text; the attempt's first text is published before this returns."""
        if not text:
            return
        if not self._reply_to:
            self.attempt.chunks += 1
            return
        self._raise_lost()
        outbox = self._outbox()
        first = self.attempt.chunks == 0
        outbox.add_text(self.attempt, text)
        if first:
            await outbox.flush()
        elif self._batcher.interval <= 0:
            outbox.wake()

    def done_reply(
        self,
        *,
        model: str,
        done_reason: str,
        usage: Usage,
        node: str | None,
        tool_calls: list[ToolCall] | None = None,
        embeddings: list[list[float]] | None = None,
    ) -> ChatDone:
        """The attempt's done, as it will be sent (and recorded)."""
        request = self._request
        return ChatDone(
            request_id=request.request_id,
            user_id=request.user_id,
            org_id=request.org_id,
            generation=self.attempt.attempt_id,
            session_id=request.session_id,
            model=model,
            chunks=self.attempt.chunks,
            done_reason=done_reason,
            usage=usage,
            node=node,
            tool_calls=tool_calls,
            embeddings=embeddings,
        )

    async def done(self, done: ChatDone) -> None:
        """Publish the attempt's done (with everything before it); returns once it is published."""
        if not self._reply_to:
            return
        self._raise_lost()
        self.release()
        outbox = self._outbox()
        outbox.add_final(self.attempt, done)
        await outbox.flush()
        self._raise_lost()  # frames before it were lost meanwhile: the done was not sent

    async def error(self, code: str, message: str) -> ChatError:
        """Publish the attempt's error; returns it once it is published (to be recorded)."""
        error = self._error_reply(code, message)
        if not self._reply_to:
            return error
        self.release()
        outbox = self._outbox()
        outbox.add_final(self.attempt, error)
        await outbox.flush()
        return error

    def _outbox(self) -> Outbox:
        return self._batcher.outbox(self._reply_to, self._request.reply_mode)

    def _raise_lost(self) -> None:
        failure = self.attempt.failure
        if failure is not None:
            raise RepliesLost(f"replies to {self._reply_to} were lost: {failure!r}") from failure
