"""SessionStore.append: the append script and the activity index in one round trip, still right
when Redis no longer knows the script (restarted or flushed): the append then loads it and runs."""

from __future__ import annotations

import time

from common.keyspace import Keyspace
from common.redis import RedisClient
from common.sessions import SessionStore, Turn


def _turns(text: str) -> list[Turn]:
    now = time.time()
    return [
        Turn(role="user", content=text, created_at=now, request_id=text),
        Turn(role="assistant", content=f"re: {text}", created_at=now, request_id=text),
    ]


async def _check(store: SessionStore, redis: RedisClient, keys: Keyspace, version: int) -> None:
    assert [t.content for t in await store.recent_turns("u", "s", 10)][-2:] == ["two", "re: two"]
    meta = await store.meta("u", "s")
    assert meta is not None and meta.version == version and meta.turns == 4
    assert await redis.zscore(keys.session_activity(), "u/s") is not None


async def test_append_records_turns_meta_and_activity(redis: RedisClient, namespace: str) -> None:
    keys = Keyspace(f"{namespace}:")
    store = SessionStore(redis, keys)
    assert (await store.append("u", "o", "s", _turns("one"))).version == 1
    assert (await store.append("u", "o", "s", _turns("two"))).version == 2
    await _check(store, redis, keys, 2)


async def test_append_when_redis_does_not_know_the_script(redis: RedisClient, namespace: str) -> None:
    keys = Keyspace(f"{namespace}:")
    store = SessionStore(redis, keys)
    await store.append("u", "o", "s", _turns("one"))
    # As after a Redis restart: the SHA the store holds names no script Redis has.
    store._append.sha = "0" * 40
    assert (await store.append("u", "o", "s", _turns("two"))).version == 2
    await _check(store, redis, keys, 2)
