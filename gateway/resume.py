"""``GET /chat/{request_id}/events``: resume a native chat stream, on any gateway.

The client sends the ``X-Chat-Request-Id`` it got and the standard ``Last-Event-ID`` (absent:
from the start) and receives exactly the events with a higher id, ending with ``done`` or
``error``, without a second generation (the contract: "Resumable streams" in the README):

- the request's record (common/exchanges.py, under the caller's own hash tag, so another user's
  request id is simply unknown: 404 ``unknown_request``) says whether it is known and whether it
  ended; an ended one is answered from the record;
- otherwise this gateway subscribes the request id on its own reply queue and broadcasts a
  :class:`~broker.messages.Resume` (the caller's verified user id, never a client's) until a
  frame arrives: the worker still generating re-points the request's replies here and replays its
  text from the requested seq. Meanwhile the record is read again each time, for a generation that
  ended in between (its worker no longer has it). The watchdog and the deadline bound the wait
  as for any stream; the relay drops what the client already has (by seq).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time

import structlog
from aiohttp import web

from broker.messages import Reply, Resume
from common.cancels import CancelMarkers
from common.exchanges import ChatRecord
from common.http import ApiError
from gateway.appkeys import KEYS, PUBLISHER, RECORDS, REDIS, ROUTER, SETTINGS, principal_of, trace_id_of
from gateway.chat import NativeSse
from gateway.relay import Owner, Relay
from gateway.replies import ReplyCursor

__all__ = ["chat_events"]

log = structlog.get_logger(__name__)

# While no frame arrived, the Resume is broadcast again this often (a worker that had not taken
# the request up yet, a redelivered request, a lost broadcast), and the record read again.
RESUME_RETRY_SECONDS = 1.0
_REQUEST_ID_CHARS = frozenset("0123456789abcdef")


_EVENT_ID = re.compile(r"[0-9]{1,9}")


def _unknown() -> ApiError:
    return ApiError(404, "unknown_request", "no such chat request, or it expired")


def _last_event_id(request: web.Request) -> int:
    raw = request.headers.get("Last-Event-ID")
    if raw is None:
        return -1
    # Present but empty (or blank, which HTTP strips to empty) is no event id: browsers omit the
    # header rather than send it empty, so refusing it matches the documented pattern.
    if _EVENT_ID.fullmatch(raw) is None:  # ASCII digits only: str.isdigit() takes "²" and "٣"
        raise ApiError(400, "invalid_last_event_id", "Last-Event-ID must be an event id of this stream")
    return int(raw)


def _frames(record: ChatRecord, owner: Owner) -> list[Reply]:
    assert record.final is not None
    return [*record.chunks(owner.user_id, owner.org_id, owner.request_id), record.final]


async def chat_events(request: web.Request) -> web.StreamResponse:
    app = request.app
    s, router = app[SETTINGS], app[ROUTER]
    principal = principal_of(request)
    request_id = request.match_info["request_id"]
    if len(request_id) > 64 or not set(request_id) <= _REQUEST_ID_CHARS:
        raise _unknown()
    last = _last_event_id(request)
    records = app[RECORDS]
    record = await records.get(principal.user_id, request_id)
    if record is None or record.state == "withdrawn":
        raise _unknown()
    loop = asyncio.get_running_loop()
    started = loop.time()
    owner = Owner(
        request_id, principal.user_id, principal.org_id, trace_id_of(request), time.time() + s.chat_deadline
    )
    with router.subscribe(request_id, principal.user_id, takeover=True) as queue:
        cursor = ReplyCursor(
            queue,
            deadline_monotonic=started + s.chat_deadline,
            heartbeat=s.sse_heartbeat,
            stall=s.reply_stall,
            next_seq=last + 1,
            resumed=True,
        )
        feeder: asyncio.Task[None] | None = None
        if record.final is not None:
            for frame in _frames(record, owner):
                queue.put_nowait(frame)
        else:
            feeder = loop.create_task(_claim(app, owner, cursor, queue, last + 1))
        log.info("stream_resume", request_id=request_id, last_event_id=last, ended=feeder is None)
        try:
            return await Relay(request, owner, cursor, started).stream(NativeSse())
        finally:
            if feeder is not None:
                feeder.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await feeder


async def _claim(
    app: web.Application, owner: Owner, cursor: ReplyCursor, queue: asyncio.Queue[Reply], from_seq: int
) -> None:
    """Broadcast the Resume until the worker answers, or feed the record once the request ended."""
    resume = Resume(
        request_id=owner.request_id,
        user_id=owner.user_id,
        org_id=owner.org_id,
        reply_to=app[ROUTER].address,
        from_seq=from_seq,
        trace_id=owner.trace_id,
    )
    records = app[RECORDS]
    try:
        # A cancel left by the client's disconnect must not make a worker skip it now.
        await CancelMarkers(app[REDIS], app[KEYS]).clear(owner.user_id, owner.request_id)
    except Exception as exc:  # best effort: the grace period covers a running generation
        log.warning("cancel_marker_clear_failed", error=repr(exc))
    while cursor.generation is None:
        try:
            await app[PUBLISHER].publish_resume(resume)
        except Exception as exc:  # the broker is away: the next round tries again
            log.warning("resume_publish_failed", error=repr(exc))
        await asyncio.sleep(RESUME_RETRY_SECONDS)
        if cursor.generation is not None:
            return
        try:
            record = await records.get(owner.user_id, owner.request_id)
        except Exception as exc:
            log.warning("resume_record_read_failed", error=repr(exc))
            continue
        if record is not None and record.final is not None:
            for frame in _frames(record, owner):
                queue.put_nowait(frame)
            return
