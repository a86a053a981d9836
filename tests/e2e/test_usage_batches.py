"""The ledger reads both forms of usage on the events exchange: a single ``generation.finished``
event and a ``UsageBatch``; each event is recorded once per request id (a batch repeating one
already recorded adds nothing) and each message is acked once, after its events are written."""

from __future__ import annotations

import time
import uuid
from typing import Any

from helpers import wait_for

from auth.ledger import Ledger
from broker.events import publish_usage
from broker.messages import GenerationFinished
from broker.topology import QueueLimits, Topology


def _event(request_id: str, tokens: int) -> GenerationFinished:
    return GenerationFinished(
        request_id=request_id,
        user_id="ledger-user",
        org_id="ledger-org",
        model="llama3.2",
        outcome="done",
        prompt_tokens=tokens,
        completion_tokens=tokens,
        finished_at=time.time(),
    )


async def test_the_ledger_records_usage_batches_once_per_request(
    ledger: Ledger, amqp: Any, namespace: str
) -> None:
    channel = await amqp.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(Topology(namespace, QueueLimits()).events_exchange)
    ids = [f"ledger-batch-{uuid.uuid4().hex[:12]}" for _ in range(4)]
    await publish_usage(exchange, [_event(ids[0], 1)])  # a single event
    await publish_usage(exchange, [_event(i, 2) for i in ids[1:]])  # one batch of three
    await publish_usage(exchange, [_event(ids[1], 99), _event(ids[0], 99)])  # a redelivered pair
    assert ledger._pool is not None

    async def rows() -> list[Any]:
        return await ledger._pool.fetch(  # type: ignore[union-attr]
            "SELECT request_id, completion_tokens FROM usage WHERE request_id = ANY($1) ORDER BY request_id",
            ids,
        )

    await wait_for(lambda: _count(rows, 4), timeout=10, what="four usage rows")

    async def drained() -> bool:
        return await ledger.backlog() == 0 and ledger.busy == 0

    await wait_for(drained, timeout=10)
    recorded = {r["request_id"]: r["completion_tokens"] for r in await rows()}
    assert recorded == {ids[0]: 1, ids[1]: 2, ids[2]: 2, ids[3]: 2}
    assert ledger.metrics.recorded.labels("duplicate")._value.get() == 2
    # Every message was acked (nothing waits unacked or ready on the ledger queue).
    queue = await channel.declare_queue(Topology(namespace, QueueLimits()).ledger_queue, passive=True)
    assert queue.declaration_result.message_count == 0


async def _count(rows: Any, expected: int) -> bool:
    return len(await rows()) == expected
