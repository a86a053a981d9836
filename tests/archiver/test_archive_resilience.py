"""The archive under stress: S3 outages, duplicate events, users chatting mid-archive, spill, poison."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aio_pika
import pytest
from archive_support import chat, s3_objects
from helpers import KeyPair, auth_header, wait_for
from s3server import MotoServer

from archiver.worker import ATTEMPTS_HEADER
from broker.events import publish_session_event
from broker.messages import SessionEvent
from broker.topology import QueueLimits, Topology
from common.keyspace import Keyspace
from common.sessions import SessionStore


async def test_s3_outage_archives_once_after_restart_without_hot_loop(
    gateway_factory: Any,
    worker: Any,
    archiver_factory: Any,
    keys: KeyPair,
    base_env: dict[str, str],
    redis: Any,
    amqp: Any,
    namespace: str,
) -> None:
    s3 = MotoServer()
    await asyncio.to_thread(s3.start)
    try:
        env = {"S3_ENDPOINT_URL": s3.url, "S3_CONNECT_TIMEOUT": "0.5", "S3_READ_TIMEOUT": "2"}
        gateway = await gateway_factory(**env)
        archiver = await archiver_factory(sweep=False, ARCHIVE_WRITE_ATTEMPTS="2", **env)
        token = keys.mint("dana")
        await chat(gateway, token, "s", "one")
        await chat(gateway, token, "s", "two")

        await asyncio.to_thread(s3.stop)
        retry_queue = await (await amqp.channel()).declare_queue(
            Topology(namespace, QueueLimits()).archiver_retry_queue, passive=True
        )
        assert (await gateway.post("/sessions/s/end", headers=auth_header(token))).status == 202

        # S3 is down: the event goes around the delay queue. Look at it each time it waits there
        # (and put it back): the attempt it is on, and how long the broker holds it (its TTL).
        parked: dict[int, float] = {}

        async def parked_twice() -> bool:
            message = await retry_queue.get(no_ack=False, fail=False)
            if message is not None:
                assert message.expiration is not None
                parked[int(message.headers[ATTEMPTS_HEADER])] = message.expiration
                await message.nack(requeue=True)
            return len(parked) >= 2

        await wait_for(parked_twice, timeout=30, interval=0.02, what="the event parked twice")
        # Back-off, not a hot retry loop: every time around, the event waits twice as long.
        assert parked == {attempt: pytest.approx(0.3 * 2 ** (attempt - 1)) for attempt in parked}
        assert archiver.metrics.registry.get_sample_value("archiver_retries_scheduled_total") >= 2
        session = await (await gateway.get("/sessions/s", headers=auth_header(token))).json()
        assert session["state"] == "ended"
        assert len(session["turns"]) == 4, "nothing is deleted while the archive is unavailable"

        await asyncio.to_thread(s3.start)  # comes back empty: the archiver recreates the bucket

        async def archived() -> bool:
            body = await (await gateway.get("/sessions/s", headers=auth_header(token))).json()
            return bool(body.get("state") == "archived")

        await wait_for(archived, timeout=30)
        objects = await s3_objects({**base_env, **env})
        assert len(objects) == 1
        assert len(next(iter(objects.values()))["turns"]) == 4
    finally:
        await asyncio.to_thread(s3.stop)


async def test_finished_delivered_twice_gives_one_object(
    gateway: Any,
    worker: Any,
    archiver_factory: Any,
    keys: KeyPair,
    base_env: dict[str, str],
    amqp: Any,
    namespace: str,
    redis: Any,
) -> None:
    archiver = await archiver_factory(sweep=False)
    token = keys.mint("erin")
    await chat(gateway, token, "twice", "hello")
    ended = await SessionStore(redis, Keyspace(f"{namespace}:")).end("erin", "twice")
    assert ended is not None
    event = SessionEvent(
        event="session.finished",
        request_id="dup",
        user_id="erin",
        org_id="org-test",
        session_id="twice",
        version=ended[0],
        at=time.time(),
    )
    channel = await amqp.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(Topology(namespace, QueueLimits()).events_exchange)
    await asyncio.gather(publish_session_event(exchange, event), publish_session_event(exchange, event))

    await archiver.run_until_idle()
    value = archiver.metrics.registry.get_sample_value
    handled = sum(
        value("archiver_sessions_archived_total", {"result": r}) or 0 for r in ("removed", "kept", "gone")
    )
    assert handled == 2
    objects = await s3_objects(base_env)
    assert len(objects) == 1
    assert len(next(iter(objects.values()))["turns"]) == 2
    assert not [
        s for m in archiver.metrics.registry.collect() if m.name == "archiver_failures" for s in m.samples
    ]


async def test_turns_added_while_archiving_are_kept_and_archived_later(
    gateway: Any, worker: Any, archiver_factory: Any, keys: KeyPair, base_env: dict[str, str]
) -> None:
    archiver = await archiver_factory(sweep=False)
    token = keys.mint("frank")
    await chat(gateway, token, "busy", "before the end")
    real_put = archiver.store.put_verified
    chatted = asyncio.Event()

    async def put_while_user_chats(key: str, document: Any) -> int:
        if not chatted.is_set():
            chatted.set()
            await chat(gateway, token, "busy", "during archiving")  # lands between snapshot and removal
        return await real_put(key, document)

    archiver.store.put_verified = put_while_user_chats  # type: ignore[method-assign]
    assert (await gateway.post("/sessions/busy/end", headers=auth_header(token))).status == 202

    await archiver.run_until_idle()
    value = archiver.metrics.registry.get_sample_value
    assert value("archiver_sessions_archived_total", {"result": "kept"}) == 1, "the first write is done"
    live = await (await gateway.get("/sessions/busy", headers=auth_header(token))).json()
    assert live["state"] == "active", "the session changed while archiving, so it stays"
    assert [t["content"] for t in live["turns"] if t["role"] == "user"] == [
        "before the end",
        "during archiving",
    ]

    assert (await gateway.post("/sessions/busy/end", headers=auth_header(token))).status == 202

    await archiver.run_until_idle()
    body = await (await gateway.get("/sessions/busy", headers=auth_header(token))).json()
    assert body["state"] == "archived"
    objects = await s3_objects(base_env)
    assert len(objects) == 1
    turns = next(iter(objects.values()))["turns"]
    assert [t["content"] for t in turns if t["role"] == "user"] == ["before the end", "during archiving"]
    assert len(turns) == 4


async def test_turns_over_the_redis_cap_are_archived_not_lost(
    gateway: Any, worker_factory: Any, archiver_factory: Any, keys: KeyPair, base_env: dict[str, str]
) -> None:
    await worker_factory(SESSION_MAX_TURNS="4", SPILL_ARCHIVE_TURNS="4")
    await archiver_factory(sweep=False)
    token = keys.mint("gina")
    for i in range(5):
        await chat(gateway, token, "long", f"q{i}")

    async def spilled_archived() -> bool:
        return len(await s3_objects(base_env)) == 1

    await wait_for(spilled_archived)  # the spill was stored without ending the session
    body = await (await gateway.get("/sessions/long", headers=auth_header(token))).json()
    assert body["state"] == "active"
    assert [t["content"] for t in body["turns"] if t["role"] == "user"] == [f"q{i}" for i in range(5)]
    assert (await gateway.post("/sessions/long/end", headers=auth_header(token))).status == 202

    async def archived() -> bool:
        done = await (await gateway.get("/sessions/long", headers=auth_header(token))).json()
        return bool(done["state"] == "archived")

    await wait_for(archived)
    turns = next(iter((await s3_objects(base_env)).values()))["turns"]
    assert [t["content"] for t in turns if t["role"] == "user"] == [f"q{i}" for i in range(5)]
    assert len(turns) == 10


async def test_poison_event_goes_to_dead_letter_queue(
    archiver_factory: Any, amqp: Any, namespace: str
) -> None:
    archiver = await archiver_factory(sweep=False)
    topology = Topology(namespace, QueueLimits())
    channel = await amqp.channel()
    exchange = await channel.get_exchange(topology.events_exchange)
    await exchange.publish(aio_pika.Message(b"not json at all"), routing_key="session.finished")
    dead = await channel.declare_queue(topology.dead_letter_queue, passive=True)

    async def dead_lettered() -> bool:
        return await dead.get(fail=False, no_ack=True) is not None

    await wait_for(dead_lettered)
    assert archiver.metrics.registry.get_sample_value("archiver_rejected_messages_total") == 1


async def test_active_sessions_gauge_is_the_same_on_every_gateway(
    gateway_factory: Any, worker: Any, keys: KeyPair
) -> None:
    gateways = [await gateway_factory() for _ in range(2)]
    for i in range(3):
        await chat(gateways[i % 2], keys.mint(f"u{i}"), "s", "hi")
    # Workers write the activity index right after answering (with the other chats of their tick).
    for gateway in gateways:

        async def counted(gateway: Any = gateway) -> bool:
            text = await (await gateway.get("/metrics")).text()
            return "chat_active_sessions_total 3.0" in text

        await wait_for(counted, timeout=5, what="3 active sessions on every gateway")
