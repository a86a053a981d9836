"""Usage reports and session activity leave a worker in batches: the chats ending within one tick
(``BATCH_WRITE_MS``) cost one persistent broker message (a ``UsageBatch``) and one Redis command,
not one each; a request answered again from its record (its first attempt died after committing)
reports its usage again, for the ledger to keep once."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from reply_support import ReplyClient, chat_request

from broker.messages import ChatDone, GenerationFinished, UsageBatch, usage_decoder
from broker.topology import EVENT_GENERATION_FINISHED, EVENT_USAGE_BATCH, QueueLimits, Topology
from common.keyspace import Keyspace


async def _usage_queue(amqp: Any, namespace: str) -> Any:
    channel = await amqp.channel()
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(
        Topology(namespace, QueueLimits()).events_exchange, routing_key=EVENT_GENERATION_FINISHED
    )
    return queue


async def _usage_messages(queue: Any, events: int) -> list[tuple[str, list[GenerationFinished]]]:
    """(AMQP type, events) of each usage message, until ``events`` events arrived."""
    got: list[tuple[str, list[GenerationFinished]]] = []
    async with asyncio.timeout(10):
        while sum(len(e) for _, e in got) < events:
            message = await queue.get(fail=False, no_ack=True)
            if message is None:
                await asyncio.sleep(0.05)
                continue
            decoded = usage_decoder.decode(message.body)
            got.append((message.type or "", decoded.events if isinstance(decoded, UsageBatch) else [decoded]))
    return got


def _recorded(request_id: str, user_id: str) -> Any:
    return msgspec.structs.replace(
        chat_request(request_id, user_id, "count my tokens"), session_id=f"s-{request_id}", record=True
    )


async def test_chats_ending_within_one_tick_share_one_usage_message_and_one_activity_write(
    worker_factory: Any, amqp: Any, namespace: str, redis: Any
) -> None:
    await worker_factory(BATCH_WRITE_MS="1000")
    queue = await _usage_queue(amqp, namespace)
    client = await ReplyClient.open(amqp, namespace)
    requests = [_recorded(f"usage-batch-{i:04d}", f"batch-user-{i}") for i in range(5)]
    await asyncio.gather(*(client.send(r) for r in requests))
    received = await client.collect({r.request_id for r in requests})
    done = {rid: replies[-1] for rid, replies in received.replies.items()}
    assert all(isinstance(d, ChatDone) for d in done.values())

    [(kind, events)] = await _usage_messages(queue, 5)
    assert kind == EVENT_USAGE_BATCH
    assert sorted(e.request_id for e in events) == sorted(r.request_id for r in requests)
    for event in events:
        final = done[event.request_id]
        assert isinstance(final, ChatDone)
        assert (event.outcome, event.completion_tokens) == ("done", final.usage.completion_tokens)
    # Every session is in the activity index (written together, once the tick ended).
    activity = await redis.zrange(Keyspace(f"{namespace}:").session_activity(), 0, -1)
    members = {m.decode() if isinstance(m, bytes) else m for m in activity}
    assert members == {f"{r.user_id}/{r.session_id}" for r in requests}


async def test_a_request_answered_again_from_its_record_reports_its_usage_again(
    worker: Any, amqp: Any, namespace: str
) -> None:
    queue = await _usage_queue(amqp, namespace)
    client = await ReplyClient.open(amqp, namespace)
    request = _recorded("usage-again-0001", "again-user")
    await client.send(request)
    first = (await client.collect({request.request_id})).replies[request.request_id][-1]
    [(_, [reported])] = await _usage_messages(queue, 1)
    # The same request again, as a redelivery after its worker died between the answer and the
    # usage report: answered from the record (no second generation) and reported again.
    await client.send(request)
    again = (await client.collect({request.request_id})).replies[request.request_id][-1]
    assert isinstance(first, ChatDone) and isinstance(again, ChatDone)
    assert again.usage == first.usage
    [(kind, [repeated])] = await _usage_messages(queue, 1)
    assert kind == EVENT_GENERATION_FINISHED
    assert repeated.request_id == reported.request_id == request.request_id
    assert (repeated.completion_tokens, repeated.prompt_tokens) == (
        reported.completion_tokens,
        reported.prompt_tokens,
    )
