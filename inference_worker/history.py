"""What the model sees: the request's own messages after a window of the session's recent turns
(read through the one session reader: Redis, or the archive for a resumed archived session)."""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import msgspec

from broker.messages import ChatRequest
from common.cancels import CancelMarkers
from common.exchanges import ChatRecords
from common.redis import RedisClient
from common.session_reader import SessionReader
from common.sessions import Turn


class Prefetched(NamedTuple):
    cancelled: bool  # cancelled (or withdrawn) before it started
    history: list[Turn]
    record_state: str | None  # the request's record (common/exchanges.py): final = answered before
    cancel_at: float | None  # a cancel with a grace period takes effect then (common/cancels.py)


class HistoryReader:
    def __init__(
        self,
        redis: RedisClient,
        cancels: CancelMarkers,
        sessions: SessionReader,
        records: ChatRecords,
        *,
        window: int,
    ) -> None:
        self._redis = redis
        self._cancels = cancels
        self._sessions = sessions
        self._records = records
        self._window = window

    async def prefetch(self, request: ChatRequest) -> Prefetched:
        """Whether the request was cancelled before it started, its record's state and its recent
        history: one round trip (every key is under the user's hash tag)."""
        session_id = request.session_id if request.use_history and self._window > 0 else None
        async with self._redis.pipeline(transaction=False) as pipe:
            self._cancels.queue_check(pipe, request.user_id, request.request_id)
            self._records.queue_state(pipe, request.user_id, request.request_id)
            if session_id:
                self._sessions.queue_recent(pipe, request.user_id, session_id, self._window)
            results = await pipe.execute()
        at = CancelMarkers.effective_at(results[0])
        cancelled = at is not None and at <= time.time()
        cancel_at = at if at is not None and not cancelled else None
        state = results[1].decode() if isinstance(results[1], bytes) else results[1]
        if cancelled or not session_id:
            return Prefetched(cancelled, [], state, cancel_at)
        history = await self._sessions.recent(
            request.user_id, session_id, self._window, prefetched=results[2], synced=bool(results[3])
        )
        return Prefetched(False, history, state, cancel_at)

    @staticmethod
    def conversation(request: ChatRequest, history: list[Turn]) -> list[dict[str, Any]]:
        """The messages for Ollama's ``/api/chat`` (tool calls and results as Ollama names them)."""
        messages = [_message(t) for t in history]
        if request.messages:
            messages.extend(msgspec.to_builtins(m) for m in request.messages)
        else:
            messages.append({"role": "user", "content": request.prompt})
        return messages


def _message(turn: Turn) -> dict[str, Any]:
    """A session turn as Ollama's chat message: an assistant's tool calls, a tool result's name."""
    message: dict[str, Any] = {"role": turn.role, "content": turn.content}
    if turn.tool_calls:
        message["tool_calls"] = [
            {"function": {"name": c.function.name, "arguments": c.function.arguments}}
            for c in turn.tool_calls
        ]
    if turn.tool_name:
        message["tool_name"] = turn.tool_name
    return message
