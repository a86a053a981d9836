"""The session API: only ever the caller's own sessions (another user's id is simply absent).

``GET /sessions``, ``GET /sessions/{id}`` (Redis, merged with the archive once archived),
``POST /sessions/{id}/end`` (finish now: the archiver stores it) and ``DELETE /sessions/{id}``
(erased from Redis and from the archive).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import msgspec
import structlog
from aio_pika.abc import AbstractExchange
from aiohttp import web

from broker.events import publish_session_event
from broker.messages import SessionEvent
from common.archive import ArchiveCorrupt, ArchiveUnavailable
from common.http import ApiError, json_response, query_int
from common.sessions import ArchivePointer, SessionMeta, Turn
from gateway.appkeys import ARCHIVE, EVENTS, READER, SESSIONS, principal_of, request_id_of, trace_id_of
from gateway.validation import check_session_id

log = structlog.get_logger(__name__)

MAX_PAGE = 100
# The listing waits at most this long for S3 to put back lost pointers (the next listing goes on).
RECOVER_SECONDS = 1.0


def _summary(entry: SessionMeta | ArchivePointer, session_id: str) -> dict[str, Any]:
    if isinstance(entry, SessionMeta):
        return {
            "session_id": session_id,
            "state": entry.state,
            "title": entry.title,
            "turns": entry.turns + entry.spilled,
            "created_at": entry.created_at,
            "last_activity": entry.last_activity,
        }
    return {
        "session_id": session_id,
        "state": "archived",
        "title": entry.title,
        "turns": entry.turns,
        "created_at": entry.created_at,
        "last_activity": entry.last_activity,
        "archived_at": entry.archived_at,
    }


def _turn(t: Turn) -> dict[str, Any]:
    out: dict[str, Any] = {"role": t.role, "content": t.content, "created_at": t.created_at}
    if t.model:
        out["model"] = t.model
    if t.usage:
        out["usage"] = t.usage
    if t.outcome:
        out["outcome"] = t.outcome  # done, interrupted (the text the client got), cancelled, failed
    if t.tool_calls:
        out["tool_calls"] = msgspec.to_builtins(t.tool_calls)
    if t.tool_name:
        out["tool_name"] = t.tool_name
    return out


def _archive_down(exc: Exception) -> ApiError:
    return ApiError(
        503, "archive_unavailable", f"the archive cannot be reached: {exc}", headers={"Retry-After": "5"}
    )


async def list_own_sessions(request: web.Request) -> web.Response:
    """The caller's sessions from Redis. The first page first puts back the pointers of archived
    sessions Redis lost (the archive's own index knows them); S3 being down only skips that."""
    sessions = request.app[SESSIONS]
    principal = principal_of(request)
    limit = query_int(request, "limit", 20, minimum=1, maximum=MAX_PAGE)
    offset = query_int(request, "cursor", 0, maximum=10_000_000)
    if offset == 0:
        try:
            async with asyncio.timeout(RECOVER_SECONDS):
                await request.app[READER].recover(principal.user_id)
        except (ArchiveUnavailable, ArchiveCorrupt, TimeoutError) as exc:
            log.warning("archive_index_unavailable", error=repr(exc))
    entries, next_offset = await sessions.page(principal.user_id, offset=offset, limit=limit)
    return json_response(
        {
            "sessions": [_summary(entry, sid) for sid, entry in entries],
            "next": str(next_offset) if next_offset is not None else None,
        }
    )


async def get_own_session(request: web.Request) -> web.Response:
    user_id = principal_of(request).user_id
    session_id = check_session_id(request.match_info["session_id"])
    try:
        view = await request.app[READER].view(user_id, session_id)
    except (ArchiveUnavailable, ArchiveCorrupt) as exc:
        raise _archive_down(exc) from None
    if view is None:
        raise ApiError(404, "session_not_found", "no such session")
    where = view.located.snapshot.meta if view.located.snapshot is not None else view.located.pointer
    assert where is not None
    summary = _summary(where, session_id)
    summary["turns"] = [_turn(t) for t in view.turns]
    return json_response(summary)


async def end_own_session(request: web.Request) -> web.Response:
    """Finish a session now: it is announced to the archiver, which stores and removes it."""
    sessions = request.app[SESSIONS]
    principal = principal_of(request)
    session_id = check_session_id(request.match_info["session_id"])
    ended = await sessions.end(principal.user_id, session_id)
    if ended is None:
        try:
            located = await request.app[READER].locate(principal.user_id, session_id)
        except (ArchiveUnavailable, ArchiveCorrupt) as exc:
            raise _archive_down(exc) from None
        if located.pointer is not None:
            return json_response({"session_id": session_id, "state": "archived"})
        raise ApiError(404, "session_not_found", "no such session")
    await _announce_finished(
        request.app[EVENTS],
        request_id_of(request),
        trace_id_of(request),
        principal.user_id,
        ended.org_id,
        session_id,
        ended.version,
    )
    return json_response({"session_id": session_id, "state": "ended"}, status=202)


async def _announce_finished(
    events: AbstractExchange,
    request_id: str,
    trace_id: str,
    user_id: str,
    org_id: str,
    session_id: str,
    version: int,
) -> None:
    event = SessionEvent(
        event="session.finished",
        request_id=request_id or uuid.uuid4().hex,
        user_id=user_id,
        org_id=org_id,
        session_id=session_id,
        version=version,
        at=time.time(),
        trace_id=trace_id,
    )
    await publish_session_event(events, event)


async def delete_own_session(request: web.Request) -> web.Response:
    """Erase the archived object and its index entry first (so a failure leaves everything in
    place), then Redis."""
    sessions = request.app[SESSIONS]
    user_id = principal_of(request).user_id
    session_id = check_session_id(request.match_info["session_id"])
    try:
        located = await request.app[READER].locate(user_id, session_id)
    except (ArchiveUnavailable, ArchiveCorrupt) as exc:
        raise _archive_down(exc) from None
    if not located.exists:
        raise ApiError(404, "session_not_found", "no such session")
    pointer = located.pointer
    await sessions.mark_deleted(user_id, session_id)  # an archiver mid-write drops its object
    if pointer is not None:
        try:
            await request.app[ARCHIVE].delete(pointer.key)
        except ArchiveUnavailable as exc:
            await sessions.mark_deleted(user_id, session_id, deleted=False)
            raise _archive_down(exc) from None
    await sessions.delete(user_id, session_id)
    return web.Response(status=204)
