"""The Redis scripts whose repetition would change their effect are safe to repeat: redis-py retries
a command after a connection error (common/redis.py), and if the first attempt had in fact run, the
same call (same arguments, token included) arrives a second time. Each test makes that second call
and checks it changes nothing and answers as the first did."""

from __future__ import annotations

import time
import types
import uuid

import pytest

from auth.refresh import RefreshOutcome, RefreshTokenStore
from common.keyspace import Keyspace
from common.redis import RedisClient
from common.sessions import ArchivePointer, SessionStore, Turn
from gateway.admission import OK, Admission


@pytest.fixture
def keyspace(namespace: str) -> Keyspace:
    return Keyspace(f"{namespace}:")


@pytest.fixture
def same_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every session-script call gets one token, as a repeated call does."""
    monkeypatch.setattr("common.sessions._call_token", lambda: "repeated-call")


def _turns(text: str) -> list[Turn]:
    now = time.time()
    return [
        Turn(role="user", content=text, created_at=now, request_id=text),
        Turn(role="assistant", content=f"re: {text}", created_at=now, request_id=text),
    ]


async def test_a_repeated_append_adds_nothing(
    redis: RedisClient, keyspace: Keyspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SessionStore(redis, keyspace)
    monkeypatch.setattr("common.sessions._call_token", lambda: "first")
    first = await store.append("u", "o", "s", _turns("hi"))
    again = await store.append("u", "o", "s", _turns("hi"))
    assert again == first
    assert len(await store.recent_turns("u", "s", 100)) == 2
    monkeypatch.setattr("common.sessions._call_token", lambda: "second")
    assert (await store.append("u", "o", "s", _turns("more"))).version == first.version + 1
    assert len(await store.recent_turns("u", "s", 100)) == 4


async def test_a_repeated_idle_end_still_reports_that_it_ended_the_session(
    redis: RedisClient, keyspace: Keyspace, same_token: None
) -> None:
    store = SessionStore(redis, keyspace)
    await store.append("u", "o", "s", _turns("hi"))
    cutoff = time.time() + 10
    first = await store.end("u", "s", idle_cutoff=cutoff)
    assert first is not None
    assert await store.end("u", "s", idle_cutoff=cutoff) == first, "else nobody announces it"


async def test_a_repeated_finish_does_not_drop_turns_spilled_meanwhile(
    redis: RedisClient, keyspace: Keyspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SessionStore(redis, keyspace, max_turns=2)
    for text in ("a", "b"):
        await store.append("u", "o", "s", _turns(text))
    snapshot, _ = await store.snapshot_and_pointer("u", "s")
    assert snapshot is not None and len(snapshot.spilled) == 2
    await store.append("u", "o", "s", _turns("c"))  # two more turns spill meanwhile
    pointer = ArchivePointer(
        key="k", org_id="o", title="t", turns=4, created_at=0, last_activity=0, archived_at=1, version=2
    )
    monkeypatch.setattr("common.sessions._call_token", lambda: "repeated-call")
    assert await store.finish_archive(snapshot, pointer, remove=True) is False
    assert await store.finish_archive(snapshot, pointer, remove=True) is False
    after, stored = await store.snapshot_and_pointer("u", "s")
    assert after is not None and [t.content for t in after.spilled] == ["b", "re: b"]
    assert stored == pointer


async def test_a_repeated_finish_that_removed_the_session_reports_it_removed(
    redis: RedisClient, keyspace: Keyspace, same_token: None
) -> None:
    store = SessionStore(redis, keyspace)
    await store.append("u", "o", "s", _turns("hi"))
    snapshot, _ = await store.snapshot_and_pointer("u", "s")
    assert snapshot is not None
    pointer = ArchivePointer(
        key="k", org_id="o", title="t", turns=2, created_at=0, last_activity=0, archived_at=1, version=1
    )
    assert await store.finish_archive(snapshot, pointer, remove=True) is True
    assert await store.finish_archive(snapshot, pointer, remove=True) is True
    assert await store.snapshot_and_pointer("u", "s") == (None, pointer)


async def test_a_repeated_admission_is_admitted_without_spending_twice(
    redis: RedisClient, keyspace: Keyspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    admission = Admission(redis, keyspace, user_limit=1)
    fixed = uuid.uuid4()
    monkeypatch.setattr("gateway.admission.uuid", types.SimpleNamespace(uuid4=lambda: fixed))
    first = await admission.admit("u", "o", "jti", cost=1)
    again = await admission.admit("u", "o", "jti", cost=1)
    assert (first.status, again.status) == (OK, OK)
    assert again.remaining == 0
    monkeypatch.setattr("gateway.admission.uuid", uuid)
    assert not (await admission.admit("u", "o", "jti", cost=1)).allowed, "the one slot was spent once"


async def test_a_repeated_refresh_rotation_is_not_taken_for_token_reuse(
    redis: RedisClient, keyspace: Keyspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = RefreshTokenStore(redis, keyspace, ttl=600, revoked_login_ttl=900)
    user = uuid.uuid4().hex
    issued = await store.issue(user, 0)
    assert issued is not None
    token, family = issued
    monkeypatch.setattr("auth.refresh._new_token", lambda u, f: f"{u}.{f}.{'n' * 43}")
    first = await store.rotate(token)
    again = await store.rotate(token)
    assert (first.outcome, again.outcome) == (RefreshOutcome.ROTATED, RefreshOutcome.ROTATED)
    assert again.token == first.token
    monkeypatch.undo()
    replayed = await store.rotate(token)  # a different client presenting the old token: reuse
    assert replayed.outcome is RefreshOutcome.REUSED
    assert replayed.family_id == family
