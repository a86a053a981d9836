"""What the model sees: the request's own messages after a window of the session's recent turns,
read from Redis, or from the archive when the session was archived and then resumed."""

from __future__ import annotations

import structlog

from broker.messages import ChatRequest
from common.archive import ArchiveCorrupt, ArchiveStore, ArchiveUnavailable
from common.keyspace import Keyspace
from common.redis import RedisClient
from common.sessions import SessionStore, Turn

log = structlog.get_logger(__name__)


class HistoryReader:
    def __init__(
        self,
        redis: RedisClient,
        keys: Keyspace,
        sessions: SessionStore,
        archive: ArchiveStore | None,
        *,
        window: int,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._sessions = sessions
        self._archive = archive
        self._window = window

    async def prefetch(self, request: ChatRequest) -> tuple[bool, list[Turn]]:
        """Whether the request was cancelled before it started, and its recent history: one round trip."""
        wants_history = bool(request.session_id and request.use_history and self._window > 0)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.exists(self._keys.cancelled(request.user_id, request.request_id))
            if wants_history:
                assert request.session_id is not None
                pipe.lrange(self._keys.session_turns(request.user_id, request.session_id), -self._window, -1)
            results = await pipe.execute()
        cancelled = bool(results[0])
        history = SessionStore.decode_turns(results[1]) if wants_history else []
        if wants_history and not history and not cancelled:
            assert request.session_id is not None
            history = await self._archived(request.user_id, request.session_id)
        return cancelled, history

    @staticmethod
    def conversation(request: ChatRequest, history: list[Turn]) -> list[dict[str, str]]:
        """The messages for Ollama's ``/api/chat``."""
        messages = [{"role": t.role, "content": t.content} for t in history]
        if request.messages:
            messages.extend({"role": m.role, "content": m.content} for m in request.messages)
        else:
            messages.append({"role": "user", "content": request.prompt})
        return messages

    async def _archived(self, user_id: str, session_id: str) -> list[Turn]:
        pointer = await self._sessions.pointer(user_id, session_id)
        if pointer is None or self._archive is None:
            return []
        try:
            document = await self._archive.get(pointer.key)
        except (ArchiveUnavailable, ArchiveCorrupt) as exc:
            log.warning("archived_history_unavailable", error=str(exc))
            return []
        return [] if document is None else document.turns[-self._window :]
