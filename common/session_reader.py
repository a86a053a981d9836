"""The one way to read a session, wherever its turns are: Redis first, the S3 archive for the rest.

A session's turns live in Redis while it is in use (the capped list, plus a spill list of turns
over the cap not yet archived); once archived they live in one S3 object, and a session resumed
after archiving has both. The gateway (the session API), the worker (the model's history window)
and the archiver (what to store) all read through :class:`SessionReader`, so "Redis, else the
archive" and the merge of the two are decided here only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog

from common.archive import ArchiveCorrupt, ArchivedSession, ArchiveStore, ArchiveUnavailable, merge_turns
from common.sessions import ArchivePointer, SessionStore, Snapshot, Turn

__all__ = ["Located", "SessionReader", "SessionView"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Located:
    """Where a session is: its Redis state (``snapshot``) and its archive pointer, read together."""

    snapshot: Snapshot | None
    pointer: ArchivePointer | None

    @property
    def exists(self) -> bool:
        return self.snapshot is not None or self.pointer is not None


@dataclass(frozen=True, slots=True)
class SessionView:
    """A session as its owner sees it: every turn, archived and live, oldest first."""

    located: Located
    turns: list[Turn]


class SessionReader:
    def __init__(self, store: SessionStore, archive: ArchiveStore | None) -> None:
        self._store = store
        self._archive = archive

    async def locate(self, user_id: str, session_id: str) -> Located:
        """Redis state and archive pointer in one atomic read."""
        snapshot, pointer = await self._store.snapshot_and_pointer(user_id, session_id)
        return Located(snapshot, pointer)

    async def archived(self, pointer: ArchivePointer | None) -> ArchivedSession | None:
        """The archived object a pointer names (None without one, or when it is gone).

        Raises :class:`ArchiveUnavailable` / :class:`ArchiveCorrupt`: callers decide whether to
        answer 503 (the session API) or go on without (the model's history).
        """
        if pointer is None or self._archive is None:
            return None
        return await self._archive.get(pointer.key)

    async def view(self, user_id: str, session_id: str) -> SessionView | None:
        """Every turn of the session (None when the caller has no such session)."""
        located = await self.locate(user_id, session_id)
        if not located.exists:
            return None
        document = await self.archived(located.pointer)
        archived = document.turns if document is not None else []
        if located.snapshot is None:
            return SessionView(located, archived)
        live = [*located.snapshot.spilled, *located.snapshot.turns]
        return SessionView(located, merge_turns(archived, live))

    def queue_recent(self, pipe: Any, user_id: str, session_id: str, window: int) -> None:
        """Add the Redis read of :meth:`recent` to a caller's pipeline (one round trip with other
        reads); pass its result to :meth:`recent` as ``prefetched``."""
        self._store.queue_recent(pipe, user_id, session_id, window)

    async def recent(
        self, user_id: str, session_id: str, window: int, *, prefetched: list[bytes] | None = None
    ) -> list[Turn]:
        """The last ``window`` turns for the model: Redis, or the archive when the session left
        Redis and was resumed. An unreachable archive gives no history (the chat goes on) and a
        warning, rather than failing the chat."""
        if window <= 0:
            return []
        if prefetched is None:
            turns = await self._store.recent_turns(user_id, session_id, window)
        else:
            turns = SessionStore.decode_turns(prefetched)
        if turns:
            return turns
        try:
            document = await self.archived(await self._store.pointer(user_id, session_id))
        except (ArchiveUnavailable, ArchiveCorrupt) as exc:
            log.warning("archived_history_unavailable", error=str(exc))
            return []
        return [] if document is None else document.turns[-window:]
