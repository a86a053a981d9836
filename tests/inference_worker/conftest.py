"""Fixtures of the worker's tests that talk to it as a queue-level integrator does."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from helpers import RabbitManagement
from integrator_support import Integrator, integrator_user

from broker.topology import QueueLimits, Topology


@pytest.fixture
async def integrator(
    rabbitmq_management: RabbitManagement, rabbitmq_url: str, namespace: str
) -> AsyncIterator[Integrator]:
    """This test's own RabbitMQ user with an integrator's permissions, on its broker prefix."""
    async with integrator_user(rabbitmq_management, rabbitmq_url, Topology(namespace, QueueLimits())) as made:
        yield made
