"""What the model sees: the request's own messages after a window of the session's recent turns
(read through the one session reader: Redis, or the archive for a resumed archived session)."""

from __future__ import annotations

from typing import Any

import msgspec

from broker.messages import ChatRequest
from common.cancels import CancelMarkers
from common.redis import RedisClient
from common.session_reader import SessionReader
from common.sessions import Turn


class HistoryReader:
    def __init__(
        self, redis: RedisClient, cancels: CancelMarkers, sessions: SessionReader, *, window: int
    ) -> None:
        self._redis = redis
        self._cancels = cancels
        self._sessions = sessions
        self._window = window

    async def prefetch(self, request: ChatRequest) -> tuple[bool, list[Turn]]:
        """Whether the request was cancelled before it started, and its recent history: one round
        trip (every key is under the user's hash tag), the archive pointer included, which a
        session with no turns in Redis needs."""
        session_id = request.session_id if request.use_history and self._window > 0 else None
        async with self._redis.pipeline(transaction=False) as pipe:
            self._cancels.queue_check(pipe, request.user_id, request.request_id)
            if session_id:
                self._sessions.queue_recent(pipe, request.user_id, session_id, self._window)
            results = await pipe.execute()
        cancelled = bool(results[0])
        if cancelled or not session_id:
            return cancelled, []
        return False, await self._sessions.recent(
            request.user_id, session_id, self._window, prefetched=results[1:]
        )

    @staticmethod
    def conversation(request: ChatRequest, history: list[Turn]) -> list[dict[str, Any]]:
        """The messages for Ollama's ``/api/chat`` (tool calls and results as Ollama names them)."""
        messages: list[dict[str, Any]] = [{"role": t.role, "content": t.content} for t in history]
        if request.messages:
            messages.extend(msgspec.to_builtins(m) for m in request.messages)
        else:
            messages.append({"role": "user", "content": request.prompt})
        return messages
