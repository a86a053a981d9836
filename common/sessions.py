"""Session state in Redis: capped turn history, metadata, per-user index, archive pointers.

All keys of one session share the user's hash tag, so every script here runs in one Cluster
slot; only the global activity index (read by the idle sweeper) is updated separately.

Nothing is lost to the cap: turns trimmed from the history move to a spill list that the
archiver stores and then clears.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

import msgspec

from common.keyspace import Keyspace
from common.redis import RedisClient

SessionState = Literal["active", "ended", "archived"]


class Turn(msgspec.Struct, kw_only=True, omit_defaults=True):
    role: str
    content: str
    created_at: float
    model: str | None = None
    usage: dict[str, int] | None = None
    request_id: str | None = None
    trace_id: str | None = None
    finish_reason: str | None = None
    # How the exchange ended (assistant turns): done, interrupted (the text the client got),
    # cancelled, failed. See common/exchanges.py.
    outcome: str | None = None


class SessionMeta(msgspec.Struct, kw_only=True):
    session_id: str
    user_id: str
    org_id: str
    title: str
    turns: int
    created_at: float
    last_activity: float
    version: int
    state: SessionState = "active"
    spilled: int = 0
    last_request_id: str = ""
    last_trace_id: str = ""


class Ended(NamedTuple):
    """A session this call ended, with the last chat's ids so its announcement can be traced."""

    version: int
    org_id: str
    last_request_id: str
    last_trace_id: str


class ArchivePointer(msgspec.Struct, kw_only=True):
    """Where an archived session lives, kept in Redis so listing needs no S3 call."""

    key: str
    org_id: str
    title: str
    turns: int
    created_at: float
    last_activity: float
    archived_at: float
    version: int


class Snapshot(msgspec.Struct, kw_only=True):
    meta: SessionMeta
    spilled: list[Turn]
    turns: list[Turn]


class AppendResult(msgspec.Struct):
    version: int
    spilled: int


_encoder = msgspec.json.Encoder()
_turn_decoder = msgspec.json.Decoder(Turn)
_pointer_decoder = msgspec.json.Decoder(ArchivePointer)

# Every script whose repetition would change its effect carries a token unique to the call: a
# command retried after a connection error (common/redis.py) that had in fact run is then a no-op
# that answers as the first run did.

# The append itself, as a Lua function shared with the exchange commit (common/exchanges.py).
# k1..k5: turns, meta, index, spill, tombstone; a[b] .. a[b+8]: now, max_turns, max_bytes, org_id,
# title, sid, request id, trace id, call token; the turns are a[b+9] .. a[#a].
APPEND_TURNS_LUA = """
local function append_turns(turns_key, meta_key, index_key, spill_key, tomb_key, a, b)
  local now, max_turns, max_bytes = a[b], tonumber(a[b + 1]), tonumber(a[b + 2])
  redis.call('DEL', tomb_key)
  local added = 0
  for i = b + 9, #a do
    redis.call('RPUSH', turns_key, a[i])
    added = added + #a[i]
  end
  local bytes = redis.call('HINCRBY', meta_key, 'bytes', added)
  local length = redis.call('LLEN', turns_key)
  while length > 1 and (length > max_turns or bytes > max_bytes) do
    local dropped = redis.call('LPOP', turns_key)
    redis.call('RPUSH', spill_key, dropped)
    bytes = redis.call('HINCRBY', meta_key, 'bytes', -#dropped)
    length = length - 1
  end
  redis.call('HSETNX', meta_key, 'created_at', now)
  redis.call('HSETNX', meta_key, 'org_id', a[b + 3])
  redis.call('HSETNX', meta_key, 'title', a[b + 4])
  redis.call('HSET', meta_key, 'last_activity', now, 'turns', length, 'state', 'active')
  redis.call('HSET', meta_key, 'last_request_id', a[b + 6], 'last_trace_id', a[b + 7])
  redis.call('HSET', meta_key, 'append_token', a[b + 8])
  local version = redis.call('HINCRBY', meta_key, 'version', 1)
  redis.call('ZADD', index_key, now, a[b + 5])
  return {version, redis.call('LLEN', spill_key)}
end
"""

# KEYS: turns, meta, index, spill, tombstone. ARGV: as append_turns's, from 1.
_APPEND = (
    APPEND_TURNS_LUA
    + """
if redis.call('HGET', KEYS[2], 'append_token') == ARGV[9] then
  return {tonumber(redis.call('HGET', KEYS[2], 'version')), redis.call('LLEN', KEYS[4])}
end
return append_turns(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV, 1)
"""
)

# KEYS: meta. ARGV: idle cutoff (or '' for "now, whatever the activity"), call token.
# Returns {version, org, last request id, last trace id} or nil.
_END = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return nil end
if redis.call('HGET', KEYS[1], 'end_token') ~= ARGV[2] then
  if ARGV[1] ~= '' then
    if state ~= 'active' then return nil end
    local last = tonumber(redis.call('HGET', KEYS[1], 'last_activity') or '0')
    if last > tonumber(ARGV[1]) then return nil end
  end
  redis.call('HSET', KEYS[1], 'state', 'ended', 'end_token', ARGV[2])
end
local fields = redis.call('HMGET', KEYS[1], 'version', 'org_id', 'last_request_id', 'last_trace_id')
return {fields[1], fields[2] or '', fields[3] or '', fields[4] or ''}
"""

# KEYS: turns, meta, spill, archive hash.
# ARGV: sid, version, spilled count archived, pointer json, remove (1/0), call token.
# Returns 1 when the session left Redis, 0 when it changed meanwhile (it stays, active, for later).
_FINISH_ARCHIVE = """
local version = redis.call('HGET', KEYS[2], 'version')
if not version then
  if redis.call('HGET', KEYS[4], ARGV[1]) == ARGV[4] then return 1 end
elseif redis.call('HGET', KEYS[2], 'finish_token') == ARGV[6] then
  return 0
end
redis.call('LTRIM', KEYS[3], tonumber(ARGV[3]), -1)
redis.call('HSET', KEYS[4], ARGV[1], ARGV[4])
if ARGV[5] == '1' and version == ARGV[2] and redis.call('LLEN', KEYS[3]) == 0 then
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
  return 1
end
if version then
  redis.call('HSET', KEYS[2], 'finish_token', ARGV[6])
  if version ~= ARGV[2] then redis.call('HSET', KEYS[2], 'state', 'active') end
end
return 0
"""

# KEYS: archive hash, index, tombstone. ARGV: sid, pointer json, last activity.
# Returns 1 when the pointer was put back, 0 when Redis had one or the session was deleted.
_RESTORE_POINTER = """
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
local restored = redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], 'NX', ARGV[3], ARGV[1])
return restored
"""

# KEYS: turns, meta, spill, archive hash, index, tombstone. ARGV: sid, tombstone ttl.
_DELETE = """
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('SET', KEYS[6], '1', 'EX', tonumber(ARGV[2]))
return 1
"""


def _call_token() -> str:
    """Unique per script call: a repeat of the call is recognised (see the scripts above)."""
    return uuid.uuid4().hex


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _meta(user_id: str, session_id: str, raw: dict[Any, Any]) -> SessionMeta | None:
    fields = {_text(k): _text(v) for k, v in raw.items()}
    if "created_at" not in fields:
        return None
    state = fields.get("state", "active")
    return SessionMeta(
        session_id=session_id,
        user_id=user_id,
        org_id=fields.get("org_id", ""),
        title=fields.get("title", ""),
        turns=int(fields.get("turns", "0")),
        created_at=float(fields["created_at"]),
        last_activity=float(fields.get("last_activity", fields["created_at"])),
        version=int(fields.get("version", "0")),
        state="ended" if state == "ended" else "active",
        last_request_id=fields.get("last_request_id", ""),
        last_trace_id=fields.get("last_trace_id", ""),
    )


class SessionStore:
    """Reads and changes session state; every multi-key change is one atomic script."""

    def __init__(
        self,
        redis: RedisClient,
        keyspace: Keyspace,
        *,
        max_turns: int = 200,
        max_bytes: int = 512 * 1024,
        title_chars: int = 80,
        tombstone_ttl: int = 86_400,
    ) -> None:
        self._redis = redis
        self._keys = keyspace
        self._max_turns = max_turns
        self._max_bytes = max_bytes
        self._title_chars = title_chars
        self._tombstone_ttl = tombstone_ttl
        self._append = redis.register_script(_APPEND)
        self._end = redis.register_script(_END)
        self._finish = redis.register_script(_FINISH_ARCHIVE)
        self._delete = redis.register_script(_DELETE)
        self._restore = redis.register_script(_RESTORE_POINTER)

    # -- reading (callers outside common/ read through common.session_reader.SessionReader) ------
    async def recent_turns(self, user_id: str, session_id: str, window: int) -> list[Turn]:
        """The last ``window`` turns in Redis, oldest first (empty for a new session)."""
        if window <= 0:
            return []
        raw = await self._redis.lrange(self._keys.session_turns(user_id, session_id), -window, -1)
        return self.decode_turns(raw)

    def queue_recent(self, pipe: Any, user_id: str, session_id: str, window: int) -> None:
        """Queue :meth:`recent_turns`'s read on a caller's pipeline; decode with :meth:`decode_turns`."""
        pipe.lrange(self._keys.session_turns(user_id, session_id), -window, -1)

    @staticmethod
    def decode_turns(raw: list[bytes] | list[bytes | str]) -> list[Turn]:
        return [_turn_decoder.decode(item) for item in raw]

    async def meta(self, user_id: str, session_id: str) -> SessionMeta | None:
        return _meta(
            user_id, session_id, await self._redis.hgetall(self._keys.session_meta(user_id, session_id))
        )

    async def snapshot_and_pointer(
        self, user_id: str, session_id: str
    ) -> tuple[Snapshot | None, ArchivePointer | None]:
        """Meta, spill, turns and archive pointer read atomically (one MULTI on the user's slot)."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(self._keys.session_meta(user_id, session_id))
            pipe.lrange(self._keys.session_spill(user_id, session_id), 0, -1)
            pipe.lrange(self._keys.session_turns(user_id, session_id), 0, -1)
            pipe.hget(self._keys.session_archive(user_id), session_id)
            raw_meta, raw_spill, raw_turns, raw_pointer = await pipe.execute()
        pointer = None if raw_pointer is None else _pointer_decoder.decode(raw_pointer)
        meta = _meta(user_id, session_id, raw_meta)
        if meta is None:
            return None, pointer
        meta.spilled = len(raw_spill)
        snapshot = Snapshot(
            meta=meta, spilled=self.decode_turns(raw_spill), turns=self.decode_turns(raw_turns)
        )
        return snapshot, pointer

    async def pointer(self, user_id: str, session_id: str) -> ArchivePointer | None:
        raw = await self._redis.hget(self._keys.session_archive(user_id), session_id)
        return self.decode_pointer(raw)

    def queue_pointer(self, pipe: Any, user_id: str, session_id: str) -> None:
        """Queue :meth:`pointer`'s read on a caller's pipeline; decode with :meth:`decode_pointer`."""
        pipe.hget(self._keys.session_archive(user_id), session_id)

    @staticmethod
    def decode_pointer(raw: bytes | str | None) -> ArchivePointer | None:
        return None if raw is None else _pointer_decoder.decode(raw)

    def queue_synced(self, pipe: Any, user_id: str) -> None:
        """Queue the read of the user's archive-synced flag (see Keyspace.archive_synced)."""
        pipe.exists(self._keys.archive_synced(user_id))

    async def mark_synced(self, user_id: str, ttl: int = 30 * 86_400) -> None:
        await self._redis.set(self._keys.archive_synced(user_id), "1", ex=ttl)

    async def mark_deleted(self, user_id: str, session_id: str, *, deleted: bool = True) -> None:
        """Set (or clear) the tombstone that stops an archiver from storing this session."""
        key = self._keys.session_deleted(user_id, session_id)
        if deleted:
            await self._redis.set(key, "1", ex=self._tombstone_ttl)
        else:
            await self._redis.delete(key)

    async def deleted(self, user_id: str, session_id: str) -> bool:
        return bool(await self._redis.exists(self._keys.session_deleted(user_id, session_id)))

    # -- changing --------------------------------------------------------------------------------
    async def append(self, user_id: str, org_id: str, session_id: str, turns: list[Turn]) -> AppendResult:
        """Append turns and touch the session; turns over the cap move to the spill list."""
        keys, args = self.append_plan(user_id, org_id, session_id, turns)
        version, spilled = await self._append(keys=keys, args=args)
        await self.touch(user_id, session_id, float(args[0]))
        return AppendResult(int(version), int(spilled))

    def append_plan(
        self, user_id: str, org_id: str, session_id: str, turns: list[Turn]
    ) -> tuple[list[str], list[Any]]:
        """The KEYS and ARGV of ``APPEND_TURNS_LUA``'s ``append_turns`` (for a script that
        appends along with other changes in the user's slot, see common/exchanges.py)."""
        now = time.time()
        title = next((t.content for t in turns if t.role == "user"), "")[: self._title_chars]
        args: list[Any] = [
            repr(now),
            self._max_turns,
            self._max_bytes,
            org_id,
            title,
            session_id,
            next((t.request_id for t in turns if t.request_id), ""),
            next((t.trace_id for t in turns if t.trace_id), ""),
            _call_token(),
            *(_encoder.encode(t) for t in turns),
        ]
        keys = [
            self._keys.session_turns(user_id, session_id),
            self._keys.session_meta(user_id, session_id),
            self._keys.session_index(user_id),
            self._keys.session_spill(user_id, session_id),
            self._keys.session_deleted(user_id, session_id),
        ]
        return keys, args

    async def touch(self, user_id: str, session_id: str, now: float) -> None:
        """The session's place in the global activity index (read by the idle sweeper)."""
        await self.touch_many([(user_id, session_id, now)])

    async def touch_many(self, activity: Sequence[tuple[str, str, float]]) -> None:
        """Several sessions' activity in one command; a score only moves forward (``GT``), so
        writes that cross on the way keep the latest."""
        members: dict[str, float] = {}
        for user_id, session_id, now in activity:
            member = f"{user_id}/{session_id}"
            members[member] = max(now, members.get(member, now))
        await self._redis.zadd(self._keys.session_activity(), members, gt=True)

    async def end(self, user_id: str, session_id: str, *, idle_cutoff: float | None = None) -> Ended | None:
        """Mark the session ended; with ``idle_cutoff`` only an active one idle since then.

        Returns what it ended when this call ended it, so exactly one caller announces it (and
        the announcement carries the last chat's ids, for tracing).
        """
        result = await self._end(
            keys=[self._keys.session_meta(user_id, session_id)],
            args=["" if idle_cutoff is None else repr(idle_cutoff), _call_token()],
        )
        if result is None:
            return None
        return Ended(int(result[0]), _text(result[1]), _text(result[2]), _text(result[3]))

    async def finish_archive(self, snapshot: Snapshot, pointer: ArchivePointer, *, remove: bool) -> bool:
        """After the object is stored and verified: clear the archived spill, record the pointer,
        and remove the session if it did not change meanwhile. Returns True when it was removed."""
        meta = snapshot.meta
        keys = [
            self._keys.session_turns(meta.user_id, meta.session_id),
            self._keys.session_meta(meta.user_id, meta.session_id),
            self._keys.session_spill(meta.user_id, meta.session_id),
            self._keys.session_archive(meta.user_id),
        ]
        args: list[str | int | bytes] = [
            meta.session_id,
            str(meta.version),
            len(snapshot.spilled),
            _encoder.encode(pointer),
            "1" if remove else "0",
            _call_token(),
        ]
        removed = bool(await self._finish(keys=keys, args=args))
        if removed:
            await self._redis.zrem(self._keys.session_activity(), f"{meta.user_id}/{meta.session_id}")
        return removed

    async def missing_pointers(self, user_id: str, session_ids: list[str]) -> list[str]:
        """Those of ``session_ids`` that have no archive pointer in Redis."""
        if not session_ids:
            return []
        found = await self._redis.hmget(self._keys.session_archive(user_id), session_ids)
        return [sid for sid, raw in zip(session_ids, found, strict=True) if raw is None]

    async def restore_pointer(self, user_id: str, session_id: str, pointer: ArchivePointer) -> bool:
        """Put back a pointer Redis lost (found in the archive's own index), and the session's
        place in the user's listing; never over a pointer Redis has, nor for a deleted session.
        Returns True when it was put back."""
        restored = await self._restore(
            keys=[
                self._keys.session_archive(user_id),
                self._keys.session_index(user_id),
                self._keys.session_deleted(user_id, session_id),
            ],
            args=[session_id, _encoder.encode(pointer), repr(pointer.last_activity)],
        )
        return bool(restored)

    async def delete(self, user_id: str, session_id: str) -> None:
        """Erase the session from Redis (the caller removes its archived object first)."""
        await self._delete(
            keys=[
                self._keys.session_turns(user_id, session_id),
                self._keys.session_meta(user_id, session_id),
                self._keys.session_spill(user_id, session_id),
                self._keys.session_archive(user_id),
                self._keys.session_index(user_id),
                self._keys.session_deleted(user_id, session_id),
            ],
            args=[session_id, self._tombstone_ttl],
        )
        await self._redis.zrem(self._keys.session_activity(), f"{user_id}/{session_id}")

    async def page(
        self, user_id: str, *, offset: int, limit: int
    ) -> tuple[list[tuple[str, SessionMeta | ArchivePointer]], int | None]:
        """The user's sessions, most recently active first; with the next offset or None."""
        ids = await self._redis.zrevrange(self._keys.session_index(user_id), offset, offset + limit)
        page = [_text(i) for i in ids[:limit]]
        if not page:
            return [], None
        # One round trip for the whole page: every key shares the user's hash tag (one slot).
        async with self._redis.pipeline(transaction=False) as pipe:
            for session_id in page:
                pipe.hgetall(self._keys.session_meta(user_id, session_id))
                pipe.llen(self._keys.session_spill(user_id, session_id))
            pipe.hmget(self._keys.session_archive(user_id), page)
            results = await pipe.execute()
        pointers = results[-1]
        found: list[tuple[str, SessionMeta | ArchivePointer]] = []
        for i, session_id in enumerate(page):
            meta = _meta(user_id, session_id, results[2 * i])
            if meta is not None:
                meta.spilled = int(results[2 * i + 1])
                found.append((session_id, meta))
            elif pointers[i] is not None:
                found.append((session_id, _pointer_decoder.decode(pointers[i])))
        return found, (offset + limit if len(ids) > limit else None)

    async def idle(self, cutoff: float, limit: int) -> list[tuple[str, str]]:
        """(user_id, session_id) of sessions whose last activity is at or before ``cutoff``."""
        raw = await self._redis.zrangebyscore(
            self._keys.session_activity(), "-inf", cutoff, start=0, num=limit
        )
        pairs = []
        for item in raw:
            user_id, _, session_id = _text(item).partition("/")
            pairs.append((user_id, session_id))
        return pairs

    async def forget_activity(self, user_id: str, session_id: str) -> None:
        await self._redis.zrem(self._keys.session_activity(), f"{user_id}/{session_id}")

    async def active_count(self) -> int:
        """Sessions in Redis (active or ended, not yet archived): the seed's active sessions gauge."""
        return int(await self._redis.zcard(self._keys.session_activity()))
