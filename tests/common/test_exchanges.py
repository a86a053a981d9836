"""The exchange record's scripts (common/exchanges.py) on one Redis and on a Redis Cluster: one
commit per request id, the gateway's ``interrupted`` over a worker's commit, ``withdrawn`` removing
an exchange again, and the record read back as the frames it was sent as."""

from __future__ import annotations

import time
import uuid

import pytest

from broker.messages import ChatDone, ChatError, ChatRequest, ToolCall, ToolFunction, Usage
from common.exchanges import ChatRecords, exchange_turns
from common.keyspace import Keyspace
from common.redis import RedisClient
from common.sessions import SessionStore, Turn


@pytest.fixture
def stores(redis: RedisClient, namespace: str) -> tuple[SessionStore, ChatRecords]:
    keys = Keyspace(f"{namespace}:")
    sessions = SessionStore(redis, keys)
    return sessions, ChatRecords(redis, keys, sessions)


def _request(session_id: str = "s") -> ChatRequest:
    now = time.time()
    return ChatRequest(
        request_id=uuid.uuid4().hex,
        user_id="u",
        org_id="o",
        session_id=session_id,
        prompt="question",
        model="m",
        deadline=now + 30,
        created_at=now,
    )


def _done(request: ChatRequest, generation: str, chunks: int) -> ChatDone:
    return ChatDone(
        request_id=request.request_id,
        user_id="u",
        org_id="o",
        generation=generation,
        session_id=request.session_id,
        model="m",
        chunks=chunks,
        done_reason="stop",
        usage=Usage(),
    )


async def _commit(
    records: ChatRecords,
    request: ChatRequest,
    text: str,
    offsets: list[int],
    tool_calls: list[ToolCall] | None = None,
) -> bool:
    committed, _, _ = await records.commit(
        user_id="u",
        org_id="o",
        request_id=request.request_id,
        state="done",
        generation="g2",
        text=text,
        offsets=offsets,
        final=_done(request, "g2", len(offsets)),
        session_id=request.session_id,
        turns=exchange_turns(request, text, "done", tool_calls=tool_calls),
        ttl=60,
    )
    return committed


async def _turns(sessions: SessionStore) -> list[Turn]:
    snapshot, _ = await sessions.snapshot_and_pointer("u", "s")
    return [] if snapshot is None else snapshot.turns


async def test_one_commit_per_request_id_and_the_record_reads_back_as_its_frames(
    stores: tuple[SessionStore, ChatRecords],
) -> None:
    sessions, records = stores
    request = _request()
    assert await _commit(records, request, "Hello there!", [0, 5, 11])
    assert not await _commit(records, request, "Another answer", [0])  # a redelivery: no-op
    turns = await _turns(sessions)
    assert [(t.role, t.content, t.outcome) for t in turns] == [
        ("user", "question", None),
        ("assistant", "Hello there!", "done"),
    ]
    record = await records.get("u", request.request_id)
    assert record is not None and record.state == "done"
    assert [c.content for c in record.chunks("u", "o", request.request_id)] == ["Hello", " there", "!"]
    assert isinstance(record.final, ChatDone) and record.final.chunks == 3


async def test_interrupted_rewrites_a_workers_commit_to_what_the_client_got(
    stores: tuple[SessionStore, ChatRecords],
) -> None:
    sessions, records = stores
    earlier = _request()
    await _commit(records, earlier, "an earlier answer", [0])
    request = _request()
    await _commit(records, request, "the restarted attempt's whole answer", [0])  # it won the race
    error = ChatError(
        request_id=request.request_id, user_id="u", org_id="o", generation="g1", error="x", message="y"
    )
    settled = await records.settle(
        user_id="u",
        org_id="o",
        request_id=request.request_id,
        state="interrupted",
        generation="g1",
        parts=["what the ", "client got"],
        final=error,
        session_id="s",
        turns=exchange_turns(request, "what the client got", "interrupted"),
        ttl=60,
    )
    assert settled
    turns = await _turns(sessions)
    assert [(t.content, t.outcome) for t in turns] == [
        ("question", None),
        ("an earlier answer", "done"),
        ("question", None),
        ("what the client got", "interrupted"),
    ]
    meta = await sessions.meta("u", "s")
    assert meta is not None and meta.turns == 4
    record = await records.get("u", request.request_id)
    assert record is not None and record.state == "interrupted" and record.generation == "g1"
    assert [c.content for c in record.chunks("u", "o", request.request_id)] == ["what the ", "client got"]
    assert not await _commit(records, request, "late", [0])  # a later worker commit changes nothing
    assert len(await _turns(sessions)) == 4


async def test_interrupted_drops_the_tool_calls_the_client_never_got(
    stores: tuple[SessionStore, ChatRecords],
) -> None:
    sessions, records = stores
    request = _request()
    call = ToolCall(function=ToolFunction(name="lookup", arguments={"tags": [], "n": 1}), id="call_1")
    assert await _commit(records, request, "let me look", [0], tool_calls=[call])
    assert [t.tool_calls for t in await _turns(sessions)] == [None, [call]]  # read back exactly
    await records.settle(
        user_id="u",
        org_id="o",
        request_id=request.request_id,
        state="interrupted",
        generation="g1",
        parts=["let me"],
        final=None,
        session_id="s",
        turns=exchange_turns(request, "let me", "interrupted"),
        ttl=60,
    )
    turns = await _turns(sessions)
    assert [(t.role, t.content, t.outcome, t.tool_calls) for t in turns] == [
        ("user", "question", None, None),
        ("assistant", "let me", "interrupted", None),
    ]


async def test_withdrawn_removes_a_committed_exchange_and_an_emptied_session(
    stores: tuple[SessionStore, ChatRecords], redis: RedisClient, namespace: str
) -> None:
    sessions, records = stores
    request = _request()
    await _commit(records, request, "answered anyway", [0])
    await records.settle(
        user_id="u",
        org_id="o",
        request_id=request.request_id,
        state="withdrawn",
        generation="",
        parts=[],
        final=None,
        session_id="s",
        turns=None,
        ttl=60,
    )
    assert await _turns(sessions) == []
    assert await sessions.meta("u", "s") is None
    assert await redis.exists(Keyspace(f"{namespace}:").cancelled("u", request.request_id))
    listed, _ = await sessions.page("u", offset=0, limit=10)
    assert listed == []
    assert (await records.get("u", request.request_id)).state == "withdrawn"  # type: ignore[union-attr]
