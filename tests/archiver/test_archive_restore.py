"""The archive stands on its own (README, "Backup and restore"): when Redis loses everything (an
empty Redis after a restore, a Redis restored from an older backup), an archived session is still
found by its id through the bucket's own index, comes back in the listing, resumes into its one
object, and is deleted with its index entry."""

from __future__ import annotations

from typing import Any

from archive_support import chat, s3_contents, s3_index, s3_objects
from helpers import KeyPair, auth_header

from common.redis import RedisClient
from inference_worker.simulator_text import expected_answer


async def _forget_everything(redis: RedisClient, base_env: dict[str, str]) -> None:
    """Every Redis key of this test's namespace gone, as in an empty Redis."""
    keys = [key async for key in redis.scan_iter(match=f"{base_env['REDIS_KEY_PREFIX']}*", count=500)]
    for key in keys:
        await redis.delete(key)
    assert keys


async def _user_turns(gateway: Any, token: str, session_id: str) -> list[str]:
    response = await gateway.get(f"/sessions/{session_id}", headers=auth_header(token))
    assert response.status == 200, await response.text()
    body = await response.json()
    return [t["content"] for t in body["turns"] if t["role"] == "user"]


async def test_an_archived_session_is_read_listed_and_deleted_without_redis(
    gateway: Any,
    worker: Any,
    archiver_factory: Any,
    keys: KeyPair,
    redis: RedisClient,
    base_env: dict[str, str],
) -> None:
    archiver = await archiver_factory(sweep=False)
    token = keys.mint("alice", "acme")
    for prompt in ("first", "second"):
        await chat(gateway, token, "s1", prompt)
    await chat(gateway, token, "s2", "other")
    for session_id in ("s1", "s2"):
        assert (await gateway.post(f"/sessions/{session_id}/end", headers=auth_header(token))).status == 202
    await archiver.run_until_idle()
    archived = await (await gateway.get("/sessions/s1", headers=auth_header(token))).json()
    assert archived["state"] == "archived"
    index = await s3_index(base_env)
    assert sorted(index) == ["@index/alice/s1.json", "@index/alice/s2.json"]
    assert index["@index/alice/s1.json"]["key"] in await s3_objects(base_env)

    await _forget_everything(redis, base_env)

    response = await gateway.get("/sessions/s1", headers=auth_header(token))
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["state"] == "archived"
    assert body["turns"] == archived["turns"]
    listing = await (await gateway.get("/sessions", headers=auth_header(token))).json()
    assert sorted((s["session_id"], s["state"], s["turns"]) for s in listing["sessions"]) == [
        ("s1", "archived", 4),
        ("s2", "archived", 2),
    ]
    assert (await gateway.get("/sessions/s1", headers=auth_header(keys.mint("bob")))).status == 404
    ended = await gateway.post("/sessions/s2/end", headers=auth_header(token))
    assert (await ended.json())["state"] == "archived"

    assert (await gateway.delete("/sessions/s1", headers=auth_header(token))).status == 204
    assert sorted(await s3_index(base_env)) == ["@index/alice/s2.json"]
    assert [key for key in await s3_objects(base_env) if key.endswith("/s1.json.gz")] == []
    await _forget_everything(redis, base_env)
    assert (await gateway.get("/sessions/s1", headers=auth_header(token))).status == 404
    assert await _user_turns(gateway, token, "s2") == ["other"]


async def test_a_session_resumed_after_redis_lost_it_stays_one_object(
    gateway: Any,
    worker: Any,
    archiver_factory: Any,
    keys: KeyPair,
    redis: RedisClient,
    base_env: dict[str, str],
) -> None:
    archiver = await archiver_factory(sweep=False)
    token = keys.mint("carol", "acme")
    await chat(gateway, token, "s", "before")
    assert (await gateway.post("/sessions/s/end", headers=auth_header(token))).status == 202
    await archiver.run_until_idle()
    (key,) = await s3_objects(base_env)

    await _forget_everything(redis, base_env)
    await chat(gateway, token, "s", "after")  # a new session in Redis, as far as Redis knows
    assert await _user_turns(gateway, token, "s") == ["before", "after"]
    assert (await gateway.post("/sessions/s/end", headers=auth_header(token))).status == 202
    await archiver.run_until_idle()

    objects = await s3_objects(base_env)
    assert list(objects) == [key], "merged into the session's one object, not a second one"
    assert [t["content"] for t in objects[key]["turns"] if t["role"] == "user"] == ["before", "after"]
    assert len(await s3_contents(base_env)) == 2  # the object and its index entry
    await _forget_everything(redis, base_env)
    assert await _user_turns(gateway, token, "s") == ["before", "after"]


async def test_the_model_sees_the_archived_history_on_the_first_chat_after_redis_lost_the_pointer(
    gateway: Any,
    worker_factory: Any,
    archiver_factory: Any,
    keys: KeyPair,
    redis: RedisClient,
    base_env: dict[str, str],
) -> None:
    await worker_factory()
    archiver = await archiver_factory(sweep=False)
    token = keys.mint("dave", "acme")
    first = await chat(gateway, token, "s", "before")
    assert (await gateway.post("/sessions/s/end", headers=auth_header(token))).status == 202
    await archiver.run_until_idle()
    await _forget_everything(redis, base_env)

    after = await chat(gateway, token, "s", "after")  # nothing read the session since
    history = [{"role": "user", "content": "before"}, {"role": "assistant", "content": first["response"]}]
    expected = expected_answer("llama3.2", [*history, {"role": "user", "content": "after"}], 24)
    assert after["response"] == expected
