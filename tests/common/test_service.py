"""The service lifecycle without a broker: shutdown steps (order, bounds, failures), a start that
fails half-way, and burst mode's idea of idle."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from structlog.testing import capture_logs

from common.runtime import Teardown
from common.service import Service


async def test_steps_run_last_first_once_each() -> None:
    closed: list[str] = []
    teardown = Teardown()

    @asynccontextmanager
    async def resource(name: str) -> AsyncIterator[str]:
        yield name
        closed.append(name)

    async def close_redis() -> None:
        closed.append("redis")

    teardown.push("redis_close", 5, close_redis)
    assert await teardown.enter("s3_close", 5, resource("s3")) == "s3"
    await teardown.enter("amqp_close", 5, resource("amqp"))
    await teardown.close()
    await teardown.close()
    assert closed == ["amqp", "s3", "redis"]


async def test_a_hanging_or_failing_step_does_not_stop_the_next() -> None:
    closed: list[str] = []
    teardown = Teardown()

    async def close_redis() -> None:
        closed.append("redis")

    async def broken() -> None:
        raise ConnectionResetError("peer gone")

    teardown.push("redis_close", 5, close_redis)
    teardown.push("s3_close", 5, broken)
    teardown.push("amqp_close", 0.05, asyncio.Event().wait)  # a broker that never confirms
    with capture_logs() as logs:
        await teardown.close()
    assert closed == ["redis"]
    assert [(e["event"], e["step"]) for e in logs] == [
        ("shutdown_step_timed_out", "amqp_close"),
        ("shutdown_step_failed", "s3_close"),
    ]


async def test_drain_waits_for_running_tasks_then_cancels_the_rest() -> None:
    teardown = Teardown()
    tasks: set[asyncio.Task[None]] = set()
    teardown.drain("drain", tasks, grace=0.1)
    quick = asyncio.create_task(asyncio.sleep(0.01))
    stuck = asyncio.create_task(asyncio.Event().wait())
    tasks.update((quick, stuck))  # started after the step was registered: read at shutdown
    await teardown.close()
    assert quick.done() and not quick.cancelled()
    assert stuck.cancelled()


class FakeService(Service):
    def __init__(self, *, fail: bool = False) -> None:
        super().__init__()
        self.fail = fail
        self.closed: list[str] = []
        self.running = 0
        self.waiting = 0

    async def start(self) -> None:
        async def close_redis() -> None:
            self.closed.append("redis")

        self.teardown.push("redis_close", 5, close_redis)
        if self.fail:
            raise ConnectionRefusedError("no broker")

    async def ready(self) -> bool:
        return True

    @property
    def busy(self) -> int:
        return self.running

    async def backlog(self) -> int:
        return self.waiting


async def test_a_failed_start_closes_what_it_opened() -> None:
    service = FakeService(fail=True)
    with pytest.raises(ConnectionRefusedError):
        async with service:
            pass
    assert service.closed == ["redis"]


async def test_run_until_idle_returns_once_nothing_waits_or_runs() -> None:
    async with FakeService() as service:
        service.waiting, service.running = 1, 0

        async def consume() -> None:
            await asyncio.sleep(0.1)
            service.waiting, service.running = 0, 1  # handed over: now being handled
            await asyncio.sleep(0.1)
            service.running = 0

        consuming = asyncio.create_task(consume())
        await service.run_until_idle(timeout=5, interval=0.01)
        assert consuming.done()
        assert (service.waiting, service.running) == (0, 0)


async def test_run_until_idle_times_out_while_work_remains() -> None:
    async with FakeService() as service:
        service.running = 1
        with pytest.raises(TimeoutError):
            await service.run_until_idle(timeout=0.1, interval=0.01)
