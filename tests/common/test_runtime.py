"""Bounded shutdown steps: a close that never completes must not keep a service from exiting."""

from __future__ import annotations

import asyncio

from structlog.testing import capture_logs

from common.runtime import within


async def test_a_step_that_finishes_is_awaited_and_not_logged() -> None:
    done: list[str] = []

    async def close() -> None:
        await asyncio.sleep(0.01)
        done.append("closed")

    with capture_logs() as logs:
        await within(5, "amqp_close", close())
    assert done == ["closed"]
    assert logs == []


async def test_a_step_that_hangs_is_cancelled_and_logged() -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def close() -> None:
        started.set()
        try:
            await asyncio.Event().wait()  # a peer that never answers
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with capture_logs() as logs:
        await within(0.05, "amqp_close", close())
    assert started.is_set() and cancelled.is_set()
    assert [(e["event"], e["step"], e["log_level"]) for e in logs] == [
        ("shutdown_step_timed_out", "amqp_close", "warning")
    ]
