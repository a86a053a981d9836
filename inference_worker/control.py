"""What the control fanout reaches: a worker's running requests, by (owner, request id).

Every worker binds an exclusive queue to the control (cancel) exchange and hands each message to
:meth:`Controls.on_message`:

- a :class:`~broker.messages.Cancel` stops its owner's running request at once, or, with a
  ``grace`` period (a resumable stream whose client went away), when that period ends unless a
  Resume came first; a cancel from a gateway the stream has since moved away from is stale and
  ignored;
- a :class:`~broker.messages.Resume` drops a pending grace cancel and re-points the request's
  replies to the resuming gateway, replaying them from the requested seq
  (:meth:`~inference_worker.replies.ReplyStream.repoint`).

Both name a request by its owner's user id as well as its id, so nothing here can reach another
user's request.
"""

from __future__ import annotations

import asyncio
import time

import msgspec
import structlog
from aio_pika.abc import AbstractIncomingMessage

from broker.messages import Cancel, Resume, control_decoder
from inference_worker.replies import ReplyStream

__all__ = ["Controls", "Key"]

log = structlog.get_logger(__name__)

Key = tuple[str, str]  # (user id, request id)


class Controls:
    def __init__(self) -> None:
        self._tasks: dict[Key, asyncio.Task[None]] = {}
        self._reasons: dict[Key, str] = {}
        self._streams: dict[Key, ReplyStream] = {}
        self._graced: dict[Key, asyncio.TimerHandle] = {}

    # -- the worker's side ---------------------------------------------------------------------
    def running(self, key: Key, task: asyncio.Task[None]) -> None:
        """``task`` handles the request from now on (a redelivered copy takes over)."""
        self._tasks[key] = task

    def finished(self, key: Key, task: asyncio.Task[None]) -> None:
        if self._tasks.get(key) is task:  # a redelivered copy may have taken it
            del self._tasks[key]
            self._reasons.pop(key, None)

    def streaming(self, key: Key, stream: ReplyStream) -> None:
        """``stream`` is the request's attempt a Resume re-points."""
        self._streams[key] = stream

    def ended(self, key: Key, stream: ReplyStream) -> None:
        if self._streams.get(key) is stream:
            del self._streams[key]
        graced = self._graced.pop(key, None)
        if graced is not None:
            graced.cancel()

    def reason(self, key: Key) -> str | None:
        """Why the request's task was cancelled (None: not by a cancel, i.e. shutdown)."""
        return self._reasons.get(key)

    def cancel_at(self, key: Key, at: float) -> None:
        """Cancel the request at Unix time ``at`` unless a Resume comes first (a graced marker
        found when the worker took the request up)."""
        if key not in self._graced:
            cancel = Cancel(request_id=key[1], user_id=key[0], org_id="", reason="client_disconnected")
            delay = max(0.0, at - time.time())
            self._graced[key] = asyncio.get_running_loop().call_later(delay, self._cancel_now, key, cancel)

    # -- the fanout's side ---------------------------------------------------------------------
    async def on_message(self, message: AbstractIncomingMessage) -> None:
        try:
            control = control_decoder.decode(message.body)
        except (msgspec.ValidationError, msgspec.DecodeError):
            log.warning("control_ignored_invalid")
            return
        key = (control.user_id, control.request_id)
        if isinstance(control, Resume):
            self._resume(key, control)
        elif control.grace > 0 and key in self._tasks:
            if key not in self._graced:
                loop = asyncio.get_running_loop()
                self._graced[key] = loop.call_later(control.grace, self._cancel_now, key, control)
        else:
            self._cancel_now(key, control)

    def _cancel_now(self, key: Key, cancel: Cancel) -> None:
        self._graced.pop(key, None)
        stream = self._streams.get(key)
        if cancel.reply_to and stream is not None and stream.reply_to != cancel.reply_to:
            return  # from a gateway the stream moved away from (a Resume): stale
        task = self._tasks.get(key)
        if task is not None and not task.done():
            self._reasons[key] = cancel.reason
            task.cancel(msg="cancelled")

    def _resume(self, key: Key, resume: Resume) -> None:
        """A client resumed the stream (on any gateway): keep generating, reply there."""
        graced = self._graced.pop(key, None)
        if graced is not None:
            graced.cancel()
        stream = self._streams.get(key)
        if stream is not None:
            log.info("stream_resumed", request_id=resume.request_id, from_seq=resume.from_seq)
            stream.repoint(resume.reply_to, resume.from_seq)
