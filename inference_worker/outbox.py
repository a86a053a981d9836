"""One reply queue's outgoing replies: the frames waiting for the next flush, and the one task that
publishes them, in order.

Frames are appended synchronously and taken whole by the publisher task, so the order in which a
generation adds its frames is the order they leave in (within a batch and across batches: one
batch is published before the next is taken). Text of one attempt added while its last text frame
is still waiting is appended to that frame (up to ``max_chars``, then a new frame with the next
``seq`` starts), so a batch carries one frame per attempt per ``max_chars`` of text, not one per
model token.

The task publishes when woken: by the worker's ticker (:class:`~inference_worker.replies.ReplyBatcher`)
or at once through :meth:`Outbox.flush` (a first token, a done, an error). While a publish is in
flight, what arrives meanwhile waits for the next one, so urgent frames of many generations share a
message under load (group commit) and none waits for a tick.

Each attempt also keeps what it sent as a replay buffer (its text, and the char offset where each
``seq`` starts; references to the strings the generation holds anyway, and dropped past
``REPLAY_MAX_CHARS``), so a resumed stream can be replayed from any ``seq`` to another reply
queue (:meth:`Outbox.add_ready` takes such prebuilt frames, and the liveness frames).

Publishing is not confirmed (see the README's broker facts). A batch that cannot be published is
logged and counted, and every attempt with a frame in it is marked failed (:class:`Attempt`):
its later text and its done are dropped, and its generation is told (:class:`RepliesLost`), so
a client never gets a ``done`` after a hole in its answer; error frames still go out.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import aio_pika
import structlog
from aio_pika.abc import AbstractExchange

from broker.envelope import envelope, publish
from broker.messages import (
    ALIVE,
    BATCH,
    DONE,
    ERROR,
    TOKEN,
    Alive,
    ChatDone,
    ChatError,
    Reply,
    ReplyBatch,
    ReplyMode,
    TokenChunk,
    encoder,
)
from inference_worker.metrics import WorkerMetrics

log = structlog.get_logger(__name__)

__all__ = ["Attempt", "Outbox", "RepliesLost"]

# A batch this large is published without waiting for the tick (bounds message size and memory).
MAX_BATCH_CHARS = 64 * 1024
# An attempt's replay buffer stops past this much text (its stream can no longer be resumed).
REPLAY_MAX_CHARS = 1024 * 1024


class RepliesLost(Exception):
    """Replies of this attempt could not be published; the client's answer has a hole."""


@dataclass(slots=True, eq=False)
class Attempt:
    """One try at a request, as its frames name it (``generation`` = ``attempt_id``): ``chunks``
    counts its text frames (the next ``seq``), ``failure`` is set once one of its frames is lost."""

    request_id: str
    user_id: str
    org_id: str
    attempt_id: str
    trace_id: str = ""
    # The AMQP correlation_id of its single-message replies: the request id, unless the request
    # was refused before it was read (inference_worker/admission.py: the message's own).
    correlation_id: str = ""
    chunks: int = 0
    failure: BaseException | None = None
    # The replay buffer: the text sent (``parts``), where each seq starts, and the last frame.
    parts: list[str] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    chars: int = 0
    replayable: bool = True
    final: ChatDone | ChatError | None = None
    last_frame: float = 0.0  # loop time of the last frame added (the liveness ticker reads it)

    def buffer(self, text: str, new_frame: bool) -> None:
        if new_frame:
            self.offsets.append(self.chars)
        self.chars += len(text)
        if self.replayable:
            if self.chars > REPLAY_MAX_CHARS:
                self.replayable = False
                self.parts.clear()
            else:
                self.parts.append(text)

    def replay(self, from_seq: int) -> list[TokenChunk]:
        """The text frames from ``from_seq`` on, as they were sent."""
        text = "".join(self.parts)
        ends = [*self.offsets[1:], self.chars]
        return [
            TokenChunk(
                request_id=self.request_id,
                user_id=self.user_id,
                org_id=self.org_id,
                generation=self.attempt_id,
                seq=seq,
                content=text[self.offsets[seq] : ends[seq]],
            )
            for seq in range(max(0, from_seq), len(self.offsets))
        ]

    def alive(self) -> Alive:
        return Alive(
            request_id=self.request_id,
            user_id=self.user_id,
            org_id=self.org_id,
            generation=self.attempt_id,
            chunks=self.chunks,
        )


@dataclass(slots=True, eq=False)
class _Text:
    attempt: Attempt
    seq: int
    parts: list[str]
    size: int

    def reply(self) -> TokenChunk:
        a = self.attempt
        return TokenChunk(
            request_id=a.request_id,
            user_id=a.user_id,
            org_id=a.org_id,
            generation=a.attempt_id,
            seq=self.seq,
            content="".join(self.parts),
        )


@dataclass(slots=True, eq=False)
class _Final:
    """A frame that is whole when added: a done or error, a replayed token, a liveness frame."""

    attempt: Attempt
    final: Reply

    def reply(self) -> Reply:
        return self.final


@dataclass(slots=True, eq=False)
class _Batch:
    """Frames taken together; ``sent`` (made when someone waits) resolves to the publish failure."""

    frames: list[_Text | _Final] = field(default_factory=list)
    open_text: dict[Attempt, _Text] = field(default_factory=dict)
    chars: int = 0
    sent: asyncio.Future[BaseException | None] | None = None

    def waiter(self) -> asyncio.Future[BaseException | None]:
        if self.sent is None:
            self.sent = asyncio.get_running_loop().create_future()
        return self.sent

    def resolve(self, failure: BaseException | None) -> None:
        if self.sent is not None and not self.sent.done():
            self.sent.set_result(failure)


class Outbox:
    """The replies bound for ``reply_to`` in one ``mode``: ``"batch"`` publishes a taken batch as
    one :class:`ReplyBatch` message, ``"message"`` (integrators' default) as one message per frame
    with ``correlation_id`` = request id. ``on_pending`` is called when the outbox goes from empty
    to holding frames (the ticker then knows there is work)."""

    def __init__(
        self,
        exchange: AbstractExchange,
        reply_to: str,
        mode: ReplyMode,
        *,
        max_chars: int,
        metrics: WorkerMetrics,
        on_pending: Callable[[], None],
    ) -> None:
        self.reply_to = reply_to
        self.mode = mode
        self._exchange = exchange
        self._max_chars = max_chars
        self._metrics = metrics
        self._on_pending = on_pending
        self._batch = _Batch()
        self._sending: _Batch | None = None
        self._due = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.last_active = asyncio.get_running_loop().time()

    # -- adding ----------------------------------------------------------------------------------
    def add_text(self, attempt: Attempt, text: str) -> None:
        """Append generated text: to the attempt's waiting text frame, or as a new frame."""
        batch = self._added(len(text))
        attempt.last_frame = self.last_active
        frame = batch.open_text.get(attempt)
        if frame is None or frame.size >= self._max_chars:
            frame = _Text(attempt, attempt.chunks, [text], len(text))
            attempt.chunks += 1
            batch.frames.append(frame)
            batch.open_text[attempt] = frame
            attempt.buffer(text, True)
        else:
            frame.parts.append(text)
            frame.size += len(text)
            attempt.buffer(text, False)

    def add_final(self, attempt: Attempt, final: ChatDone | ChatError) -> None:
        """Append the attempt's last frame; no text of it follows."""
        attempt.final = final
        self.add_ready(attempt, final)
        self._batch.open_text.pop(attempt, None)

    def add_ready(self, attempt: Attempt, reply: Reply) -> None:
        """Append a frame that is complete as it is (a replayed token, a liveness frame)."""
        batch = self._added(len(reply.content) if isinstance(reply, TokenChunk) else 0)
        attempt.last_frame = self.last_active
        batch.frames.append(_Final(attempt, reply))

    def seal(self, attempt: Attempt) -> None:
        """The attempt's waiting text frame takes no more text (its replies moved elsewhere)."""
        self._batch.open_text.pop(attempt, None)

    def _added(self, chars: int) -> _Batch:
        batch = self._batch
        if not batch.frames:
            self._on_pending()
        batch.chars += chars
        if batch.chars >= MAX_BATCH_CHARS:
            self.wake()
        self.last_active = asyncio.get_running_loop().time()
        return batch

    # -- publishing ------------------------------------------------------------------------------
    @property
    def pending(self) -> bool:
        """Frames wait to be taken, or a taken batch is being published."""
        return bool(self._batch.frames) or self._sending is not None

    def wake(self) -> None:
        """Publish what is waiting as soon as the publisher task runs (the tick, or a full batch)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        self._due.set()

    async def flush(self) -> None:
        """Publish the frames added so far now, and return once they are published. Raises
        :class:`RepliesLost` when the batch holding them could not be published."""
        batch = self._batch
        if not batch.frames:
            return
        waiter = batch.waiter()
        self.wake()
        # Shielded: one caller giving up must not cancel the publish others wait for too.
        failure = await asyncio.shield(waiter)
        if failure is not None:
            raise RepliesLost(f"replies to {self.reply_to} were not published: {failure!r}") from failure

    async def close(self) -> None:
        """Publish what is left and wait for a publish in flight (failures are logged where they
        happen), then stop the publisher task."""
        while self.pending:
            if self._batch.frames:
                with contextlib.suppress(RepliesLost):
                    await self.flush()
            elif self._sending is not None:
                await asyncio.shield(self._sending.waiter())
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        try:
            while True:
                await self._due.wait()
                self._due.clear()
                batch = self._batch
                if not batch.frames:
                    continue
                self._batch, self._sending = _Batch(), batch
                failure = await self._send(batch)
                self._sending = None
                batch.resolve(failure)
        except asyncio.CancelledError:
            closed = ConnectionError("the reply publisher was closed")
            for left in (self._sending, self._batch):
                if left is not None:
                    left.resolve(closed)
            self._sending = None
            raise

    async def _send(self, batch: _Batch) -> BaseException | None:
        # An attempt that lost frames sends nothing more but its error (no done after a hole).
        frames = [
            f
            for f in batch.frames
            if f.attempt.failure is None or (isinstance(f, _Final) and isinstance(f.final, ChatError))
        ]
        if not frames:
            return None
        replies = [f.reply() for f in frames]
        try:
            if self.mode == "batch":
                body = encoder.encode(ReplyBatch(frames=replies))
                await publish(self._exchange, self.reply_to, envelope(body, type=BATCH, persistent=False))
            else:
                for frame, reply in zip(frames, replies, strict=True):
                    await publish(self._exchange, self.reply_to, _single(frame.attempt, reply))
        # A publisher task that died would leave every later reply of this queue waiting forever:
        # whatever the publish raised is this batch's failure (CancelledError is not an Exception).
        except Exception as exc:
            for frame in frames:
                if frame.attempt.failure is None:
                    frame.attempt.failure = exc
            self._metrics.reply_publish_failures.inc()
            log.warning("replies_not_published", reply_to=self.reply_to, frames=len(frames), error=repr(exc))
            return exc
        self._metrics.reply_messages.labels(self.mode).inc(1 if self.mode == "batch" else len(replies))
        self._metrics.reply_frames.labels(self.mode).inc(len(replies))
        self._metrics.chunks.inc(sum(isinstance(f, _Text) for f in frames))
        return None


def _single(attempt: Attempt, reply: Reply) -> aio_pika.Message:
    kind = TOKEN if isinstance(reply, TokenChunk) else DONE if isinstance(reply, ChatDone) else ERROR
    if isinstance(reply, Alive):
        kind = ALIVE
    return envelope(
        encoder.encode(reply),
        type=kind,
        persistent=False,
        request_id=attempt.request_id,
        trace_id=attempt.trace_id,
        correlation_id=attempt.correlation_id or attempt.request_id,
    )
