"""How a request's generation ends, written down: its record and session turns (once), the job,
the session events, the usage report for the ledger and the session's place in the activity index.

The order is what keeps data safe: the outcome is committed before the client gets ``done`` (a
follow-up sent after it sees this answer); the usage report and the activity update go after the
answer, gathered with the other chats of their tick (:class:`~common.batching.TickBatcher`), and
before the request is acked, so a crash in between redelivers the request, which is answered again
from its record and reported again (the ledger keeps one row per request id).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time

import structlog
from aio_pika.abc import AbstractExchange
from redis.exceptions import RedisError

from broker.events import (
    UsageOutcome,
    generation_finished,
    publish_session_event,
    publish_usage,
    session_event,
)
from broker.messages import ChatDone, ChatError, ChatRequest, GenerationFinished, Reply, ToolCall
from common.batching import TickBatcher
from common.exchanges import ChatRecords, RecordState, exchange_turns
from common.jobs import JobStore
from common.sessions import SessionStore
from inference_worker.generation import Completion, Progress
from inference_worker.metrics import WorkerMetrics
from inference_worker.replies import ReplyStream
from inference_worker.settings import WorkerSettings

__all__ = ["Outcomes"]

log = structlog.get_logger(__name__)

Activity = tuple[str, str, float]


class Outcomes:
    """A worker's outcome writer; ``aclose`` writes what its batchers hold (after the drain)."""

    def __init__(
        self,
        settings: WorkerSettings,
        metrics: WorkerMetrics,
        *,
        records: ChatRecords,
        sessions: SessionStore,
        jobs: JobStore,
        events: AbstractExchange,
        usage_events: AbstractExchange,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._records = records
        self._jobs = jobs
        # session.updated/spilled: persistent, on the unconfirmed reply channel (a lost spill
        # event only delays archiving those turns until the next spill or the session's end).
        self._events = events
        tick = settings.batch_write_ms / 1000
        # Usage: on a confirming channel, since requests are acked only after their report.
        self._usage: TickBatcher[GenerationFinished] = TickBatcher(
            functools.partial(publish_usage, usage_events), tick=tick
        )
        self._activity: TickBatcher[Activity] = TickBatcher(sessions.touch_many, tick=tick)

    async def aclose(self) -> None:
        await self._activity.aclose()
        await self._usage.aclose()

    async def report(
        self, request: ChatRequest, outcome: UsageOutcome, completion_tokens: int, prompt_tokens: int = 0
    ) -> None:
        """The generation's usage, for the ledger: published (confirmed, with the others of its
        tick) before the request is acked, so a crash before the ack means a redelivery that
        reports it (deduplicated there by request id)."""
        event = generation_finished(
            request,
            outcome,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            started=request.created_at,
        )
        await self._usage.submit(event)

    async def commit(
        self,
        request: ChatRequest,
        replies: ReplyStream,
        state: RecordState,
        text: str,
        final: ChatDone | ChatError | None,
        *,
        usage: dict[str, int] | None = None,
        finish_reason: str | None = None,
        tool_calls: list[ToolCall] | None = None,
        activity: list[tuple[str, str, float]] | None = None,
    ) -> tuple[bool, int, int]:
        """Record the exchange once (common/exchanges.py): the request's record, and its turns in
        the session (for an answer, or any text sent). A no-op when the request already has a
        final record (a redelivery; the gateway's own outcome). The session's activity update is
        written here, or, given ``activity``, left in it for the caller to write after answering."""
        record_turns = request.session_id is not None and request.record and (state == "done" or bool(text))
        turns = (
            exchange_turns(request, text, state, usage, finish_reason, tool_calls) if record_turns else None
        )
        committed, version, spilled = await self._records.commit(
            user_id=request.user_id,
            org_id=request.org_id,
            request_id=request.request_id,
            state=state,
            generation=replies.attempt.attempt_id,
            text=text,
            offsets=replies.attempt.offsets,
            final=final,
            session_id=request.session_id if turns else None,
            turns=turns,
            ttl=request.deadline - time.time() + self._settings.common.resume_record_seconds,
        )
        if committed and turns and request.session_id:
            touch = (request.user_id, request.session_id, time.time())
            if activity is not None:
                activity.append(touch)
            else:
                await self.touch([touch])
        return committed, version, spilled

    async def touch(self, activity: list[tuple[str, str, float]]) -> None:
        """The sessions' place in the activity index, with the other chats of this tick."""
        await asyncio.gather(*(self._activity.submit(touch) for touch in activity))

    async def answer_from_record(self, request: ChatRequest, replies: ReplyStream) -> None:
        """Publish a committed answer again (its own generation and seqs: the gateway drops what
        it has)."""
        record = await self._records.get(request.user_id, request.request_id)
        log.info("request_already_answered", state=record.state if record else None)
        if record is None or record.final is None:
            return
        frames: list[Reply] = [*record.chunks(request.user_id, request.org_id, request.request_id)]
        frames.append(record.final)
        await replies.replay(frames)
        if isinstance(record.final, ChatDone):
            # The attempt that committed it may have died before its usage report was confirmed
            # (it is sent after the answer): report it again; the ledger keeps one per request.
            usage = record.final.usage
            await self.report(request, "done", usage.completion_tokens, usage.prompt_tokens)

    async def start_job(self, request: ChatRequest) -> bool:
        """Mark the job running; True when it was cancelled before it started."""
        assert request.job_id is not None
        status = await self._jobs.start(
            request.user_id, request.job_id, model=request.model, session_id=request.session_id
        )
        return status == "cancelled"

    def record_partial(self, progress: Progress, request: ChatRequest) -> None:
        """Usage of a generation stopped early still counts (tokens are what the model produced)."""
        if progress.tokens:
            self._metrics.tokens.labels(request.model).inc(progress.tokens)
            self._metrics.partial_tokens.labels(request.model).inc(progress.tokens)

    async def fail(
        self,
        request: ChatRequest,
        replies: ReplyStream,
        code: str,
        text: str,
        progress: Progress | None = None,
    ) -> None:
        """Tell the waiting client (if any), then record the failure (the exchange, with the text
        sent, and the job if any): if the client cannot be told, the request is requeued and its
        next attempt answers it, so nothing is recorded before."""
        error = await replies.error(code, text)
        with contextlib.suppress(RedisError):  # the client was told; the gateway settles it too
            await self.commit(request, replies, "failed", progress.text() if progress else "", error)
        if request.job_id:
            await self._jobs.finish(
                request.user_id,
                request.job_id,
                "failed",
                response=progress.text() if progress else None,
                usage={"completion_tokens": progress.tokens} if progress else None,
                error=code,
                message=text,
            )

    async def finish(self, request: ChatRequest, replies: ReplyStream, result: Completion) -> None:
        """Record the turns first, so a follow-up request sent after ``done`` sees this answer."""
        usage = {
            "prompt_tokens": result.usage.prompt_tokens,
            "completion_tokens": result.usage.completion_tokens,
        }
        done = replies.done_reply(
            model=request.model,
            done_reason=result.done_reason,
            usage=result.usage,
            node=result.node,
            tool_calls=result.tool_calls,
        )
        activity: list[tuple[str, str, float]] = []
        committed, version, spilled_turns = await self.commit(
            request,
            replies,
            "done",
            result.text,
            done,
            usage=usage,
            finish_reason=result.done_reason,
            tool_calls=done.tool_calls,
            activity=activity,
        )
        if committed and request.session_id and request.record:
            if self._settings.session_updated_events:
                updated = session_event(request, "session.updated", version)
                await publish_session_event(self._events, updated)
            if spilled_turns >= self._settings.spill_archive_turns:
                # Turns over the Redis cap wait in the spill list; have the archiver store them now.
                spilled = session_event(request, "session.spilled", version)
                await publish_session_event(self._events, spilled)
        if request.job_id:
            job = request.job_id
            await self._jobs.finish(request.user_id, job, "done", response=result.text, usage=usage)
        # The client gets its answer first; the usage report (batched, confirmed) only holds the
        # ack: a crash in between redelivers the request, answered and reported from its record.
        # The same for the session's activity update.
        await replies.done(done)
        await asyncio.gather(
            self.report(request, "done", result.usage.completion_tokens, result.usage.prompt_tokens),
            self.touch(activity),
        )
