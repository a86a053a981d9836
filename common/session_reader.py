"""The one way to read a session, wherever its turns are: Redis first, the S3 archive for the rest.

A session's turns live in Redis while it is in use (the capped list, plus a spill list of turns
over the cap not yet archived); once archived they live in one S3 object, and a session resumed
after archiving has both. The gateway (the session API), the worker (the model's history window)
and the archiver (what to store) all read through :class:`SessionReader`, so "Redis, else the
archive" and the merge of the two are decided here only.

Redis points at the archived object. When it has no pointer (it lost it: restored from an older
backup, or emptied, while the bucket kept its objects), :meth:`SessionReader.locate` looks the
session up in the bucket's own index (``common/archive.py``) and puts the pointer back into Redis,
so the archived turns are read, listed and merged as if nothing had happened; the archiver, which
locates too, merges a resumed session into its one existing object. The model's history window
(:meth:`SessionReader.recent`) does not ask S3 on a session's first chat: it would cost every new
session an S3 round trip before its first token; once the session was located (read, listed or
archived) its pointer is back and the history with it. Except for a user Redis holds no
``archive_synced`` flag for (a new user, or Redis lost its data): on such a first chat the user's
pointers are put back from the archive's index first (:meth:`SessionReader.recover`: one S3
listing, waited for at most ``RECOVER_WAIT_SECONDS``), then the flag is set, so the model sees the
archived history and later chats cost S3 nothing.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import structlog

from common.archive import ArchiveCorrupt, ArchivedSession, ArchiveStore, ArchiveUnavailable, merge_turns
from common.sessions import ArchivePointer, SessionStore, Snapshot, Turn

__all__ = ["RECOVER_WAIT_SECONDS", "Located", "SessionReader", "SessionView"]

log = structlog.get_logger(__name__)

# A first chat waits at most this long for the archive's index (an S3 outage costs no chat), and
# after a failure no first chat asks again for a while (an outage costs no latency either).
RECOVER_WAIT_SECONDS = 0.5
RECOVER_PAUSE_SECONDS = 30.0


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
    def __init__(
        self,
        store: SessionStore,
        archive: ArchiveStore | None,
        *,
        index_wait: float | None = None,
    ) -> None:
        """``index_wait``: for a session Redis has but without a pointer (almost always one never
        archived), how long :meth:`locate` waits for the archive's index before going on without
        it, so that an S3 outage does not fail reading an active session (the session API). None
        (the archiver): as long as S3 takes, and an S3 failure raises, so that an archive run never
        starts a second object for a session whose pointer Redis lost."""
        self._store = store
        self._archive = archive
        self._index_wait = index_wait
        self._sync_paused_until = 0.0  # loop time: after an archive failure, first chats skip it

    async def locate(self, user_id: str, session_id: str) -> Located:
        """Redis state and archive pointer in one atomic read; without a pointer in Redis, the
        archive's index is asked (and the pointer it has is put back into Redis).

        Raises :class:`ArchiveUnavailable` / :class:`ArchiveCorrupt` when the index cannot be read
        and Redis knows nothing of the session (nobody can tell whether it exists), or without an
        ``index_wait``; with one, a session Redis has is located without its archived part then.
        """
        snapshot, pointer = await self._store.snapshot_and_pointer(user_id, session_id)
        if pointer is None and self._archive is not None:
            lenient = snapshot is not None and self._index_wait is not None
            try:
                async with asyncio.timeout(self._index_wait if lenient else None):
                    pointer = await self._archive.find(user_id, session_id)
            except (ArchiveUnavailable, ArchiveCorrupt, TimeoutError) as exc:
                if not lenient:
                    raise
                log.warning("archive_index_unavailable", session_id=session_id, error=repr(exc))
            if pointer is not None:
                restored = await self._store.restore_pointer(user_id, session_id, pointer)
                if restored:
                    log.info("archive_pointer_restored", session_id=session_id, key=pointer.key)
                elif await self._store.deleted(user_id, session_id):
                    pointer = None  # being deleted: its object is going, not coming back
        return Located(snapshot, pointer)

    async def recover(self, user_id: str, *, concurrency: int = 16) -> int:
        """Put back into Redis the pointers of every archived session of the user that Redis lost
        (those in the archive's index, up to one listing of it), so listings show them again.
        Returns how many were put back; raises :class:`ArchiveUnavailable` when S3 cannot answer."""
        if self._archive is None:
            return 0
        archive = self._archive
        missing = await self._store.missing_pointers(user_id, await archive.indexed(user_id))
        gate = asyncio.Semaphore(concurrency)

        async def restore(session_id: str) -> bool:
            async with gate:
                pointer = await archive.find(user_id, session_id)
            return pointer is not None and await self._store.restore_pointer(user_id, session_id, pointer)

        restored = sum(await asyncio.gather(*(restore(sid) for sid in missing)))
        if restored:
            log.info("archive_pointers_restored", user_id=user_id, restored=restored)
        return restored

    async def _sync(self, user_id: str) -> None:
        loop = asyncio.get_running_loop()
        if self._archive is None or loop.time() < self._sync_paused_until:
            return
        try:
            async with asyncio.timeout(RECOVER_WAIT_SECONDS):
                await self.recover(user_id)
        except (ArchiveUnavailable, ArchiveCorrupt, TimeoutError) as exc:
            log.warning("archive_index_unavailable", error=repr(exc))
            self._sync_paused_until = loop.time() + RECOVER_PAUSE_SECONDS
            return  # not synced: a first chat after the pause tries again
        await self._store.mark_synced(user_id)

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
        """Add the Redis reads of :meth:`recent` to a caller's pipeline (one round trip with other
        reads: two results); pass them to :meth:`recent` as ``prefetched`` and ``synced``."""
        self._store.queue_recent(pipe, user_id, session_id, window)
        self._store.queue_synced(pipe, user_id)

    async def recent(
        self,
        user_id: str,
        session_id: str,
        window: int,
        *,
        prefetched: list[bytes] | None = None,
        synced: bool = True,
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
            if not synced:  # Redis may have lost the user's pointers (see the module docstring)
                await self._sync(user_id)
            document = await self.archived(await self._store.pointer(user_id, session_id))
        except (ArchiveUnavailable, ArchiveCorrupt) as exc:
            log.warning("archived_history_unavailable", error=str(exc))
            return []
        return [] if document is None else document.turns[-window:]
