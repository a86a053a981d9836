"""One chat exchange, recorded once: the per-request record and its commit into the session.

Every chat request gets a short-lived record (``Keyspace.chat_record``, under the owner's hash
tag) holding how it ended: ``state`` (``pending`` from its admission, gateway/admission.py; then
``done``, ``failed``, ``cancelled``, ``interrupted`` or ``withdrawn``), the attempt
(``generation``), the text, the char offset where each token frame (``seq``) starts, and the final
reply (ChatDone or ChatError). The
record and the session's turns change in one script, so:

- **once per request id**: the worker's commit (:meth:`ChatRecords.commit`) appends the exchange
  only while the record is pending; a redelivered request whose record is final appends nothing
  (and is answered from the record);
- **what the client saw wins**: when a stream ends with an error, the gateway settles the exchange
  (:meth:`ChatRecords.settle`): ``interrupted`` when it ended the stream itself (the answer
  restarted after the client had text, the worker went silent, the deadline), ``failed`` when it
  relayed the worker's error, with exactly the text the client got, rewriting (or removing) the
  assistant turn a worker committed; later worker commits are no-ops;
- **refused at the door leaves no trace**: a request the gateway answered 503 is ``withdrawn``
  (record and cancel marker, one script): a worker that takes it up anyway skips it, and a commit
  that won the race is removed from the session;
- a resumed stream whose generation ended is answered from the record (:meth:`ChatRecords.get`).

The record lives until the request's deadline plus ``RESUME_RECORD_SECONDS``: past the deadline
no copy of the request can be redelivered, and a client has that long to resume a finished stream.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import msgspec

from broker.messages import ChatDone, ChatError, ChatRequest, TokenChunk, ToolCall
from common.keyspace import Keyspace
from common.redis import RedisClient
from common.sessions import APPEND_TURNS_LUA, SessionStore, Turn

__all__ = [
    "FINAL_STATES",
    "ChatRecord",
    "ChatRecords",
    "RecordState",
    "exchange_turns",
    "offsets_of",
    "request_turns",
]

RecordState = Literal["pending", "done", "failed", "cancelled", "interrupted", "withdrawn"]
FINAL_STATES: frozenset[str] = frozenset({"done", "failed", "cancelled", "interrupted", "withdrawn"})

_final_decoder = msgspec.json.Decoder(ChatDone | ChatError)
_offsets_decoder = msgspec.json.Decoder(list[int])
_encoder = msgspec.json.Encoder()

# Rewrites the exchange ``rid`` among the last turns: the assistant turn's content becomes
# ``text`` (and its outcome ``outcome``), or with ``text`` nil all its turns go; an emptied session
# goes. Tool calls travel with the done only, which the client did not get: they go too (and cjson
# would turn their arguments' empty arrays into objects).
_REWRITE_LUA = """
local function rewrite(turns_key, meta_key, index_key, spill_key, sid, rid, text, outcome)
  local n = redis.call('LLEN', turns_key)
  local from = n - 16
  if from < 0 then from = 0 end
  local items = redis.call('LRANGE', turns_key, from, -1)
  local delta = 0
  local found = false
  for i = #items, 1, -1 do
    local ok, t = pcall(cjson.decode, items[i])
    if ok and type(t) == 'table' and t.request_id == rid then
      found = true
      local idx = from + i - 1
      if text == nil then
        redis.call('LSET', turns_key, idx, '\\0removed')
        delta = delta - #items[i]
      elseif t.role == 'assistant' then
        t.content = text
        t.outcome = outcome
        t.tool_calls = nil
        local enc = cjson.encode(t)
        redis.call('LSET', turns_key, idx, enc)
        delta = delta + #enc - #items[i]
      end
    end
  end
  redis.call('LREM', turns_key, 0, '\\0removed')
  if delta ~= 0 then redis.call('HINCRBY', meta_key, 'bytes', delta) end
  local left = redis.call('LLEN', turns_key)
  if left == 0 and redis.call('LLEN', spill_key) == 0 then
    redis.call('DEL', meta_key)
    redis.call('ZREM', index_key, sid)
  elseif redis.call('EXISTS', meta_key) == 1 then
    redis.call('HSET', meta_key, 'turns', left)
  end
  return found
end
"""

# KEYS: record, turns, meta, index, spill, tombstone.
# ARGV: state, generation, text, offsets, final, ttl, session id, append (1/0), then append_turns's.
# Returns {1, version, spilled} when committed, {0} when the record was already final.
_COMMIT = (
    APPEND_TURNS_LUA
    + """
local state = redis.call('HGET', KEYS[1], 'state')
if state and state ~= 'pending' then return {0} end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'generation', ARGV[2], 'text', ARGV[3],
  'offsets', ARGV[4], 'final', ARGV[5], 'session_id', ARGV[7])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[6]))
if ARGV[8] == '1' then
  local r = append_turns(KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], ARGV, 9)
  return {1, r[1], r[2]}
end
return {1, 0, 0}
"""
)

# KEYS: record, turns, meta, index, spill, tombstone, cancel marker.
# ARGV: state (interrupted / failed / withdrawn), generation, text, offsets, final, ttl, session id,
# append (1/0), request id, then append_turns's. Returns 1 when it changed the record (a gateway
# settles a request once: its own earlier settlement stands).
_SETTLE = (
    APPEND_TURNS_LUA
    + _REWRITE_LUA
    + """
local state = redis.call('HGET', KEYS[1], 'state')
if redis.call('HGET', KEYS[1], 'by') == 'gateway' then return 0 end
if ARGV[1] == 'withdrawn' then
  redis.call('SET', KEYS[7], 'withdrawn', 'EX', tonumber(ARGV[6]))
end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'generation', ARGV[2], 'text', ARGV[3],
  'offsets', ARGV[4], 'final', ARGV[5], 'session_id', ARGV[7], 'by', 'gateway')
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[6]))
if ARGV[7] == '' then return 1 end
if state and state ~= 'pending' then
  local text = ARGV[3]
  if ARGV[1] == 'withdrawn' or text == '' then text = nil end
  local found = rewrite(KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[7], ARGV[9], text, ARGV[1])
  if not found and ARGV[8] == '1' then
    append_turns(KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], ARGV, 10)
  end
elseif ARGV[8] == '1' then
  append_turns(KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], ARGV, 10)
end
return 1
"""
)


class ChatRecord(msgspec.Struct, kw_only=True):
    """A request's record as read back: ``final`` is None while it is pending (or withdrawn)."""

    state: RecordState
    session_id: str
    generation: str = ""
    text: str = ""
    offsets: list[int] = msgspec.field(default_factory=list)
    final: ChatDone | ChatError | None = None

    def chunks(self, user_id: str, org_id: str, request_id: str) -> list[TokenChunk]:
        """The token frames the record's text was sent as (``seq`` 0, 1, ...)."""
        if not self.offsets:
            return []
        ends = [*self.offsets[1:], len(self.text)]
        return [
            TokenChunk(
                request_id=request_id,
                user_id=user_id,
                org_id=org_id,
                generation=self.generation,
                seq=seq,
                content=self.text[start:end],
            )
            for seq, (start, end) in enumerate(zip(self.offsets, ends, strict=True))
        ]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def offsets_of(parts: list[str]) -> list[int]:
    """Where each part starts in their concatenation."""
    offsets, at = [], 0
    for part in parts:
        offsets.append(at)
        at += len(part)
    return offsets


class ChatRecords:
    """Opens, commits, settles and reads per-request records (see the module docstring)."""

    def __init__(self, redis: RedisClient, keys: Keyspace, sessions: SessionStore) -> None:
        self._redis = redis
        self._keys = keys
        self._sessions = sessions
        self._commit = redis.register_script(_COMMIT)
        self._settle = redis.register_script(_SETTLE)

    def queue_state(self, pipe: Any, user_id: str, request_id: str) -> None:
        """Add a read of the record's state to a caller's pipeline (None: no record)."""
        pipe.hget(self._keys.chat_record(user_id, request_id), "state")

    async def get(self, user_id: str, request_id: str) -> ChatRecord | None:
        raw = await self._redis.hgetall(self._keys.chat_record(user_id, request_id))
        if not raw:
            return None
        fields = {_text(k): v for k, v in raw.items()}
        final = fields.get("final")
        offsets = fields.get("offsets")
        return ChatRecord(
            state=_text(fields.get("state", "pending")),  # type: ignore[arg-type]
            session_id=_text(fields.get("session_id", "")),
            generation=_text(fields.get("generation", "")),
            text=_text(fields.get("text", "")),
            offsets=_offsets_decoder.decode(offsets) if offsets else [],
            final=_final_decoder.decode(final) if final else None,
        )

    async def commit(
        self,
        *,
        user_id: str,
        org_id: str,
        request_id: str,
        state: RecordState,
        generation: str,
        text: str,
        offsets: list[int],
        final: ChatDone | ChatError | None,
        session_id: str | None,
        turns: list[Turn] | None,
        ttl: float,
    ) -> tuple[bool, int, int]:
        """The worker's outcome: record it (``text`` as sent, ``offsets`` where each seq starts)
        and append ``turns`` to the session, unless the record is final already. Returns
        (committed, session version, spilled turns)."""
        keys, args = self._plan(user_id, org_id, request_id, session_id, turns)
        result = await self._commit(
            keys=keys,
            args=[
                state,
                generation,
                text,
                _encoder.encode(offsets),
                _encoder.encode(final) if final is not None else "",
                _ttl(ttl),
                session_id or "",
                "1" if turns else "0",
                *args,
            ],
        )
        if int(result[0]) == 0:
            return False, 0, 0
        return True, int(result[1]), int(result[2])

    async def settle(
        self,
        *,
        user_id: str,
        org_id: str,
        request_id: str,
        state: Literal["interrupted", "failed", "withdrawn"],
        generation: str,
        parts: list[str],
        final: ChatError | None,
        session_id: str | None,
        turns: list[Turn] | None,
        ttl: float,
    ) -> bool:
        """The gateway's outcome, over whatever a worker committed: ``interrupted`` (the gateway
        ended the stream) or ``failed`` (it relayed the worker's error), with the text the client
        got (``parts``, as sent); or ``withdrawn`` (refused at the door: no trace)."""
        keys, args = self._plan(user_id, org_id, request_id, session_id, turns)
        keys.append(self._keys.cancelled(user_id, request_id))
        changed = await self._settle(
            keys=keys,
            args=[
                state,
                generation,
                "".join(parts),
                _encoder.encode(offsets_of(parts)),
                _encoder.encode(final) if final is not None else "",
                _ttl(ttl),
                session_id or "",
                "1" if turns else "0",
                request_id,
                *args,
            ],
        )
        return bool(changed)

    def _plan(
        self, user_id: str, org_id: str, request_id: str, session_id: str | None, turns: list[Turn] | None
    ) -> tuple[list[str], list[Any]]:
        record = self._keys.chat_record(user_id, request_id)
        if session_id:
            keys, args = self._sessions.append_plan(user_id, org_id, session_id, turns or [])
            return [record, *keys], args
        # No session: the script touches the record only; the session keys are unused names in
        # the same slot (Cluster routes a script by all its keys).
        return [record] * 6, []


def request_turns(request: ChatRequest) -> list[Turn]:
    """What the caller said in this exchange: the prompt, or for a conversation (OpenAI/Ollama
    ``messages``) its last user message; a conversation that ends with tool results (the answer to
    the model's tool calls, which the session holds as the previous assistant turn) says those."""
    messages = request.messages or []
    results: list[Turn] = []
    for message in reversed(messages):
        if message.role != "tool":
            break
        turn = Turn(
            role="tool",
            content=message.content,
            created_at=request.created_at,
            request_id=request.request_id,
            trace_id=request.trace_id or None,
            tool_name=message.tool_name,
        )
        results.insert(0, turn)
    if results:
        return results
    return [
        Turn(
            role="user",
            content=request.user_turn,
            created_at=request.created_at,
            request_id=request.request_id,
            trace_id=request.trace_id or None,
        )
    ]


def exchange_turns(
    request: ChatRequest,
    text: str,
    outcome: RecordState,
    usage: dict[str, int] | None = None,
    finish_reason: str | None = None,
    tool_calls: list[ToolCall] | None = None,
) -> list[Turn]:
    """The caller's turns (:func:`request_turns`) and the answer: its text, or the tool calls the
    model made instead."""
    return [
        *request_turns(request),
        Turn(
            role="assistant",
            content=text,
            created_at=time.time(),
            model=request.model,
            usage=usage,
            request_id=request.request_id,
            trace_id=request.trace_id or None,
            finish_reason=finish_reason,
            outcome=outcome,
            tool_calls=tool_calls or None,
        ),
    ]


def _ttl(seconds: float) -> int:
    return max(1, int(seconds))
