"""Session lifecycle: end -> archived object in S3 -> gone from Redis, still readable; idle expiry."""

from __future__ import annotations

from typing import Any

from archive_support import chat, s3_contents, s3_objects
from helpers import KeyPair, auth_header, wait_for


async def test_ended_session_is_archived_once_and_readable_after(
    gateway: Any, worker: Any, archiver_factory: Any, keys: KeyPair, redis: Any, base_env: dict[str, str]
) -> None:
    archiver = await archiver_factory(sweep=False)
    token = keys.mint("alice", "acme")
    for prompt in ("first", "second", "third"):
        await chat(gateway, token, "s1", prompt)
    before = await (await gateway.get("/sessions/s1", headers=auth_header(token))).json()
    assert before["state"] == "active"
    assert len(before["turns"]) == 6

    ended = await gateway.post("/sessions/s1/end", headers=auth_header(token))
    assert ended.status == 202
    assert (await ended.json())["state"] == "ended"

    await archiver.run_until_idle()
    after = await (await gateway.get("/sessions/s1", headers=auth_header(token))).json()
    assert after["state"] == "archived"
    assert after["turns"] == before["turns"]
    objects = await s3_objects(base_env)
    assert len(objects) == 1
    ((key, document),) = objects.items()
    assert key.startswith("acme/alice/") and key.endswith("/s1.json.gz")
    assert [t["content"] for t in document["turns"] if t["role"] == "user"] == ["first", "second", "third"]
    assert all(
        t["model"] == "llama3.2" and t["usage"]["completion_tokens"] == 24 for t in document["turns"][1::2]
    )
    prefix = base_env["REDIS_KEY_PREFIX"]
    assert not [k async for k in redis.scan_iter(match=f"{prefix}session:*")]
    assert not [k async for k in redis.scan_iter(match=f"{prefix}session_meta:*")]
    listing = await (await gateway.get("/sessions", headers=auth_header(token))).json()
    assert [(s["session_id"], s["state"], s["turns"]) for s in listing["sessions"]] == [("s1", "archived", 6)]


async def test_idle_session_is_archived_without_any_call(
    gateway: Any, worker: Any, archiver_factory: Any, keys: KeyPair, base_env: dict[str, str]
) -> None:
    await archiver_factory(SESSION_IDLE_SECONDS="0.5", SWEEP_INTERVAL_SECONDS="0.2")
    token = keys.mint("bob")
    await chat(gateway, token, "idle", "hello")

    async def archived() -> dict[str, Any] | None:
        # The archiver writes the object, then marks the session archived: wait for what users see.
        body = await (await gateway.get("/sessions/idle", headers=auth_header(token))).json()
        return body if body["state"] == "archived" else None

    body = await wait_for(archived, what="the idle session archived")
    assert len(body["turns"]) == 2
    assert len(await s3_objects(base_env)) == 1


async def test_two_archivers_sweep_without_double_work(
    gateway: Any, worker: Any, archiver_factory: Any, keys: KeyPair, base_env: dict[str, str]
) -> None:
    first = await archiver_factory(SESSION_IDLE_SECONDS="0.3", SWEEP_INTERVAL_SECONDS="0.1")
    second = await archiver_factory(SESSION_IDLE_SECONDS="0.3", SWEEP_INTERVAL_SECONDS="0.1")
    tokens = [keys.mint(f"user{i}") for i in range(5)]
    for i, token in enumerate(tokens):
        await chat(gateway, token, f"s{i}", "hi")

    async def all_archived() -> bool:
        return len(await s3_objects(base_env)) == 5

    await wait_for(all_archived)
    ended = sum(
        a.metrics.registry.get_sample_value("archiver_idle_sessions_ended_total") or 0
        for a in (first, second)
    )
    assert ended == 5, "every session is ended (and announced) exactly once"


async def test_replayed_finished_event_is_harmless(
    gateway: Any, worker: Any, archiver_factory: Any, keys: KeyPair, base_env: dict[str, str]
) -> None:
    archiver = await archiver_factory(sweep=False)
    token = keys.mint("carol")
    await chat(gateway, token, "s", "hi")
    assert (await gateway.post("/sessions/s/end", headers=auth_header(token))).status == 202

    await archiver.run_until_idle()
    assert len(await s3_objects(base_env)) == 1
    from broker.messages import SessionEvent

    replay = SessionEvent(
        event="session.finished",
        request_id="replay",
        user_id="carol",
        org_id="org-test",
        session_id="s",
        version=1,
        at=0,
    )
    assert await archiver.archive(replay) == "gone"
    assert await archiver.archive(replay) == "gone"
    objects = await s3_objects(base_env)
    assert len(objects) == 1
    assert len(next(iter(objects.values()))["turns"]) == 2


async def test_delete_erases_redis_and_archive_and_spares_others(
    gateway: Any, worker: Any, archiver_factory: Any, keys: KeyPair, base_env: dict[str, str]
) -> None:
    archiver = await archiver_factory(sweep=False)
    alice, bob = keys.mint("alice"), keys.mint("bob")
    await chat(gateway, alice, "gone", "secret")
    await chat(gateway, alice, "kept", "keep me")
    await chat(gateway, bob, "gone", "bob's own")
    assert (await gateway.post("/sessions/gone/end", headers=auth_header(alice))).status == 202

    await archiver.run_until_idle()
    assert len(await s3_objects(base_env)) == 1
    assert (await gateway.delete("/sessions/gone", headers=auth_header(alice))).status == 204
    assert await s3_contents(base_env) == {}, "the object and its index entry are gone"
    assert (await gateway.get("/sessions/gone", headers=auth_header(alice))).status == 404
    assert (await gateway.delete("/sessions/gone", headers=auth_header(alice))).status == 404
    kept = await (await gateway.get("/sessions", headers=auth_header(alice))).json()
    assert [s["session_id"] for s in kept["sessions"]] == ["kept"]
    bobs = await (await gateway.get("/sessions/gone", headers=auth_header(bob))).json()
    assert [t["content"] for t in bobs["turns"] if t["role"] == "user"] == ["bob's own"]


async def test_resumed_archived_session_keeps_history_and_its_one_object(
    gateway: Any, worker: Any, archiver_factory: Any, keys: KeyPair, base_env: dict[str, str]
) -> None:
    archiver = await archiver_factory(sweep=False)
    token = keys.mint("hank")
    first = await chat(gateway, token, "again", "before archiving")
    assert (await gateway.post("/sessions/again/end", headers=auth_header(token))).status == 202

    async def archived(expected_turns: int) -> bool:
        body = await (await gateway.get("/sessions/again", headers=auth_header(token))).json()
        return bool(body["state"] == "archived" and len(body["turns"]) == expected_turns)

    await archiver.run_until_idle()
    assert await archived(2)
    resumed = await chat(gateway, token, "again", "after archiving")
    assert resumed["response"].startswith(" [turns=2]"), "the model sees the archived turns"
    assert first["response"] != resumed["response"]
    assert (await gateway.post("/sessions/again/end", headers=auth_header(token))).status == 202
    await archiver.run_until_idle()
    assert await archived(4)
    objects = await s3_objects(base_env)
    assert len(objects) == 1
    assert [t["content"] for t in next(iter(objects.values()))["turns"] if t["role"] == "user"] == [
        "before archiving",
        "after archiving",
    ]
