"""examples/queue_integrator.py, run as an integrator runs it: a subprocess with its own RabbitMQ
user (the shipped integrator permissions), against a real worker and the simulator. It is the test
of the README's broker contract as written: relative expiration, absolute deadline, refusals."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import SingleRedis
from integrator_support import Integrator

from inference_worker.simulator_text import expected_answer

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "queue_integrator.py"


@pytest.fixture
def redis_target(single_redis_url: str) -> SingleRedis:
    return SingleRedis(single_redis_url)


@pytest.fixture
async def worker(worker_factory: Any, integrator: Integrator) -> Any:
    return await worker_factory(WORKER_INTEGRATORS=f"{integrator.user}=org-acme")


async def _run(integrator: Integrator, namespace: str, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "RABBITMQ_URL": integrator.url}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        "--prefix",
        namespace,
        "--org-id",
        "org-acme",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(60):
            out, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.mark.parametrize("mode", ["message", "batch"])
async def test_the_example_prints_the_answer(
    worker: Any, integrator: Integrator, namespace: str, mode: str
) -> None:
    code, out, err = await _run(integrator, namespace, "--reply-mode", mode, "what is a quorum queue?")
    assert code == 0, err
    assert out.removesuffix("\n") == expected_answer(
        "llama3.2", [{"role": "user", "content": "what is a quorum queue?"}], 24
    )
    assert "usage:" in err
    await worker.run_until_idle(timeout=10)


async def test_an_invalid_request_gets_invalid_request_and_a_failing_exit(
    worker: Any, integrator: Integrator, namespace: str
) -> None:
    code, out, err = await _run(integrator, namespace, "--omit", "prompt", "never sent")
    assert code == 1 and out == ""
    assert "error: invalid_request:" in err and "`prompt`" in err


async def test_a_request_past_its_deadline_gets_deadline_exceeded(
    worker: Any, integrator: Integrator, namespace: str
) -> None:
    code, out, err = await _run(integrator, namespace, "--deadline", str(time.time() - 5), "too late")
    assert code == 1 and out == ""
    assert "error: deadline_exceeded:" in err


async def test_claiming_another_org_is_forbidden(worker: Any, integrator: Integrator, namespace: str) -> None:
    code, _, err = await _run(integrator, namespace, "--org-id", "org-other", "hello")
    assert code == 1
    assert "error: forbidden_identity:" in err
