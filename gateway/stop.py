"""``DELETE /chat/{request_id}``: stop a native chat stream now (the chat page's Stop button).

A client that merely disconnects from a resumable stream gets a grace period
(``RESUME_GRACE_SECONDS``) before its generation is cancelled, so that a network cut can resume
it. A user who presses Stop wants the opposite: the model should stop at once. This route sends
the worker that cancel without a grace period (and leaves the cancel marker for a worker that
has not picked the request up yet). Only the caller's own requests: the record lives under the
caller's id, so anyone else's request id is simply unknown, and the cancel names the verified
user, which a worker checks against the request.
"""

from __future__ import annotations

import time

from aiohttp import web

from broker.messages import Cancel
from common.http import ApiError
from gateway.appkeys import METRICS, PUBLISHER, RECORDS, SETTINGS, principal_of, trace_id_of

__all__ = ["stop_chat"]

_REQUEST_ID_CHARS = frozenset("0123456789abcdef")


async def stop_chat(request: web.Request) -> web.Response:
    app = request.app
    principal = principal_of(request)
    request_id = request.match_info["request_id"]
    if len(request_id) > 64 or not set(request_id) <= _REQUEST_ID_CHARS:
        raise ApiError(404, "unknown_request", "no such chat request, or it expired")
    record = await app[RECORDS].get(principal.user_id, request_id)
    if record is None or record.state == "withdrawn":
        raise ApiError(404, "unknown_request", "no such chat request, or it expired")
    if record.final is None:  # still generating (an ended one has nothing left to stop)
        cancel = Cancel(
            request_id=request_id,
            user_id=principal.user_id,
            org_id=principal.org_id,
            reason="user_cancelled",
            trace_id=trace_id_of(request),
        )
        app[METRICS].cancels.labels("user_cancelled").inc()
        await app[PUBLISHER].cancel(cancel, time.time() + app[SETTINGS].chat_deadline)
    return web.Response(status=204)
