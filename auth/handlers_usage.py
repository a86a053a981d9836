"""``GET /usage``: token totals from the ledger, scoped by role (a member sees their own usage,
an org admin their organization's, a platform admin everything)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aiohttp import web

from auth.appkeys import AUDIT, USAGE
from auth.guard import current_user
from auth.usage import GROUPINGS
from common.http import ApiError, json_response

__all__ = ["routes"]

routes = web.RouteTableDef()
NO_STORE = {"Cache-Control": "no-store"}
MAX_RANGE = timedelta(days=400)


def _instant(request: web.Request, name: str, default: datetime) -> datetime:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise ApiError(400, "invalid_parameter", f"{name} must be an ISO 8601 date or time") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


@routes.get("/usage")
async def usage(request: web.Request) -> web.Response:
    """``from`` (inclusive) and ``to`` (exclusive), ISO 8601, default the last 30 days;
    ``group_by`` = day | model | user | key; an org admin may pass ``user_id``, a platform admin
    ``organization_id`` and ``user_id`` to narrow."""
    _, user = await current_user(request)
    now = datetime.now(UTC)
    end = _instant(request, "to", now + timedelta(seconds=1))
    start = _instant(request, "from", end - timedelta(days=30))
    if not start < end or end - start > MAX_RANGE:
        raise ApiError(400, "invalid_parameter", "from must be before to, at most 400 days apart")
    group_by = request.query.get("group_by", "day")
    allowed = ("day", "model", "user", "key") + (("organization",) if user.role == "admin" else ())
    if group_by not in GROUPINGS or group_by not in allowed:
        raise ApiError(400, "invalid_parameter", f"group_by must be one of: {', '.join(allowed)}")
    organization_id: str | None = request.query.get("organization_id")
    user_id: str | None = request.query.get("user_id")
    if user.role == "admin":
        scope = "all"
    elif user.role == "org_admin":
        if organization_id not in (None, user.organization_id):
            raise ApiError(404, "organization_not_found", "no such organization")
        organization_id, scope = user.organization_id, "organization"
    else:
        if user_id not in (None, user.user_id) or organization_id not in (None, user.organization_id):
            raise ApiError(403, "forbidden", "members see their own usage only")
        organization_id, user_id, scope = user.organization_id, user.user_id, "user"
    groups = await request.app[USAGE].totals(
        start=start, end=end, group_by=group_by, organization_id=organization_id, user_id=user_id
    )
    if user_id not in (None, user.user_id) or (
        user.role == "admin" and organization_id != user.organization_id
    ):
        await request.app[AUDIT].record(
            "admin_read_usage",
            actor_id=user.user_id,
            organization_id=user.organization_id,
            target_id=user_id or organization_id,
        )
    totals = {
        "requests": sum(g["requests"] for g in groups),
        "prompt_tokens": sum(g["prompt_tokens"] for g in groups),
        "completion_tokens": sum(g["completion_tokens"] for g in groups),
    }
    totals["total_tokens"] = totals["prompt_tokens"] + totals["completion_tokens"]
    payload = {
        "from": start.isoformat(),
        "to": end.isoformat(),
        "group_by": group_by,
        "scope": scope,
        "groups": groups,
        "totals": totals,
    }
    return json_response(payload, headers=NO_STORE)
