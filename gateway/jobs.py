"""Async jobs: ``POST /jobs`` (or ``POST /chat`` with ``"async": true``) answers 202 at once;
the same workers produce the answer into a Redis record that ``GET /jobs/{id}`` reads.
``DELETE /jobs/{id}`` cancels. Internal systems can submit the same ChatRequest with a
``job_id`` and no ``reply_to`` straight to the request queue.
"""

from __future__ import annotations

import time

from aiohttp import web

from broker.messages import Cancel, ChatRequest
from common.http import ApiError, json_response
from common.jobs import TERMINAL, Job
from gateway.appkeys import JOBS, MODELS, PUBLISHER, SETTINGS, principal_of, trace_id_of
from gateway.chat_requests import Chat, build
from gateway.publisher import NotQueued
from gateway.relay import not_queued_error
from gateway.validation import (
    JobBody,
    check_conversation,
    check_model,
    check_prompt,
    check_session_id,
    read_body,
)

JOB_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-")


def _job_payload(job: Job) -> dict[str, object]:
    payload: dict[str, object] = {
        "job_id": job.job_id,
        "status": job.status,
        "model": job.model,
        "session_id": job.session_id,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
    }
    if job.response is not None:
        payload["response"] = job.response
    if job.usage is not None:
        payload["usage"] = job.usage
    if job.error is not None:
        payload["error"] = job.error
        payload["message"] = job.message
    return payload


async def submit_job(app: web.Application, chat_request: ChatRequest) -> web.Response:
    """Create the job record, queue the request (no reply queue), answer 202 with the status URL."""
    assert chat_request.job_id is not None
    jobs = app[JOBS]
    job = await jobs.create(
        chat_request.user_id,
        chat_request.job_id,
        model=chat_request.model,
        session_id=chat_request.session_id,
    )
    try:
        await app[PUBLISHER].publish_request(chat_request, None)
    except NotQueued as exc:
        await jobs.finish(chat_request.user_id, chat_request.job_id, "failed", error=exc.code)
        raise not_queued_error(app[SETTINGS], exc, "the job") from None
    status_url = f"/jobs/{job.job_id}"
    return json_response(
        {"job_id": job.job_id, "status": job.status, "status_url": status_url},
        status=202,
        headers={"Location": status_url},
    )


async def create_job(request: web.Request) -> web.Response:
    s = request.app[SETTINGS]
    body = await read_body(request, JobBody)
    session_id = check_session_id(body.session_id) if body.session_id is not None else None
    model = check_model(body.model, default=s.default_model, allowed=await request.app[MODELS].current())
    if body.messages:
        chat = Chat(
            model=model,
            session_id=session_id,
            messages=check_conversation(
                [(m.role, m.content) for m in body.messages], max_chars=s.prompt_max_chars
            ),
            job=True,
        )
    elif body.prompt is not None:
        chat = Chat(
            model=model,
            session_id=session_id,
            prompt=check_prompt(body.prompt, max_chars=s.prompt_max_chars),
            job=True,
        )
    else:
        raise ApiError(400, "invalid_request", "send a prompt or messages")
    return await submit_job(request.app, build(request, chat))


def _job_id(request: web.Request) -> str:
    job_id = request.match_info["job_id"]
    if not job_id or len(job_id) > 128 or not set(job_id) <= JOB_ID_CHARS:
        raise ApiError(400, "invalid_job_id", "not a job id")
    return job_id


async def get_job(request: web.Request) -> web.Response:
    job = await request.app[JOBS].get(principal_of(request).user_id, _job_id(request))
    if job is None:
        raise ApiError(404, "job_not_found", "no such job (or it expired)")
    return json_response(_job_payload(job))


async def cancel_job(request: web.Request) -> web.Response:
    """Stop a queued or running job; its generation is aborted and the slot freed."""
    jobs = request.app[JOBS]
    principal = principal_of(request)
    job_id = _job_id(request)
    job = await jobs.get(principal.user_id, job_id)
    if job is None:
        raise ApiError(404, "job_not_found", "no such job (or it expired)")
    if job.status in TERMINAL:
        raise ApiError(409, "job_finished", f"the job already ended ({job.status})")
    await request.app[PUBLISHER].cancel(
        Cancel(
            request_id=job_id,
            user_id=principal.user_id,
            org_id=principal.org_id,
            reason="user_cancelled",
            trace_id=trace_id_of(request),
        ),
        time.time() + request.app[SETTINGS].job_deadline,
    )
    status = await jobs.finish(principal.user_id, job_id, "cancelled")
    job = await jobs.get(principal.user_id, job_id)
    assert job is not None
    return json_response(
        {**_job_payload(job), "status": status}, status=202 if status == "cancelled" else 200
    )
