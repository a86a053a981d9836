"""RabbitMQ topology: every exchange, queue and routing key, declared idempotently and exported.

``Topology(prefix)`` names everything, so a deployment (or a test run) can live beside others on
one broker. ``declare`` creates the shared objects at start-up from any service; ``definitions``
returns the same objects as a RabbitMQ definitions document the management UI can import.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue
from aiormq.exceptions import ChannelPreconditionFailed

log = structlog.get_logger(__name__)

EVENT_SESSION_UPDATED = "session.updated"
EVENT_SESSION_FINISHED = "session.finished"
EVENT_SESSION_SPILLED = "session.spilled"
ARCHIVER_EVENTS = (EVENT_SESSION_FINISHED, EVENT_SESSION_SPILLED)
# A generation ended (done, cancelled, failed): its usage, for the ledger (auth/ledger.py).
EVENT_GENERATION_FINISHED = "generation.finished"
# The AMQP ``type`` of a UsageBatch (several usage events; routed as generation.finished).
EVENT_USAGE_BATCH = "generation.finished.batch"
REQUEST_ROUTING_KEY = "chat"
# The RabbitMQ user the shipped definitions make for a queue-level integrator (README, "The broker
# contract"); a deployment adds its password, and maps it to an organization (WORKER_INTEGRATORS).
INTEGRATOR_USER = "integrator"


@dataclass(frozen=True, slots=True)
class QueueLimits:
    """Load-shedding and poison-message limits of the request queue."""

    max_length: int = 10_000
    delivery_limit: int = 5


@dataclass(frozen=True, slots=True)
class Topology:
    prefix: str = "chat"
    limits: QueueLimits = field(default_factory=QueueLimits)

    # -- names -----------------------------------------------------------------------------------
    @property
    def requests_exchange(self) -> str:
        """Direct exchange receiving ChatRequest messages (routing key ``chat``)."""
        return f"{self.prefix}.requests"

    @property
    def requests_queue(self) -> str:
        """Quorum queue the inference workers consume; length-limited with reject-publish."""
        return f"{self.prefix}.requests"

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.prefix}.dlx"

    @property
    def dead_letter_queue(self) -> str:
        """Rejected, expired and poison messages, kept for inspection in the management UI."""
        return f"{self.prefix}.dead-letter"

    @property
    def cancel_exchange(self) -> str:
        """Fanout exchange of Cancel messages; each worker binds an exclusive queue to it."""
        return f"{self.prefix}.cancel"

    @property
    def events_exchange(self) -> str:
        """Topic exchange of SessionEvent messages, routed by ``session.updated``/``session.finished``."""
        return f"{self.prefix}.events"

    @property
    def archiver_queue(self) -> str:
        """Durable queue of ``session.finished``/``session.spilled`` events consumed by the archiver."""
        return f"{self.prefix}.archiver"

    @property
    def ledger_queue(self) -> str:
        """Durable queue of ``generation.finished`` events consumed by the usage ledger."""
        return f"{self.prefix}.ledger"

    @property
    def archiver_retry_queue(self) -> str:
        """Delay queue: events the archiver could not store wait here (per-message TTL), then return."""
        return f"{self.prefix}.archiver.retry"

    def reply_queue(self, instance_id: str, incarnation: str) -> str:
        """One gateway process's reply queue; ``incarnation`` keeps a restarted process off the
        queue (and the late replies) of its previous life."""
        return f"{self.prefix}.replies.{instance_id}.{incarnation}"

    # -- arguments -------------------------------------------------------------------------------
    @staticmethod
    def reply_queue_arguments(expires_seconds: float) -> dict[str, Any]:
        # Not exclusive: a connection that drops and comes back (aio-pika reconnects and
        # re-consumes) finds the replies published meanwhile. Once nobody has consumed it for
        # ``expires_seconds`` (the gateway is gone), the broker deletes it.
        return {"x-queue-type": "classic", "x-expires": max(1000, int(expires_seconds * 1000))}

    def request_queue_arguments(self) -> dict[str, Any]:
        return {
            "x-queue-type": "quorum",
            "x-max-length": self.limits.max_length,
            "x-overflow": "reject-publish",
            "x-dead-letter-exchange": self.dead_letter_exchange,
            "x-delivery-limit": self.limits.delivery_limit,
        }

    def archiver_queue_arguments(self) -> dict[str, Any]:
        return {
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": self.dead_letter_exchange,
            "x-delivery-limit": self.limits.delivery_limit,
        }

    def dead_letter_queue_arguments(self) -> dict[str, Any]:
        return {"x-queue-type": "quorum"}

    def archiver_retry_queue_arguments(self) -> dict[str, Any]:
        # Expired messages go back to the archiver queue through the default exchange.
        return {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": self.archiver_queue}

    # -- declaration -----------------------------------------------------------------------------
    async def declare(self, channel: AbstractChannel) -> DeclaredTopology:
        """Declare every shared object; safe to call from every service at every start."""
        dlx = await channel.declare_exchange(
            self.dead_letter_exchange, aio_pika.ExchangeType.FANOUT, durable=True
        )
        dlq = await _declare_queue(channel, self.dead_letter_queue, self.dead_letter_queue_arguments())
        await dlq.bind(dlx, routing_key="#")
        requests = await channel.declare_exchange(
            self.requests_exchange, aio_pika.ExchangeType.DIRECT, durable=True
        )
        request_queue = await _declare_queue(channel, self.requests_queue, self.request_queue_arguments())
        await request_queue.bind(requests, routing_key=REQUEST_ROUTING_KEY)
        cancel = await channel.declare_exchange(
            self.cancel_exchange, aio_pika.ExchangeType.FANOUT, durable=True
        )
        events = await channel.declare_exchange(
            self.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        archiver = await _declare_queue(channel, self.archiver_queue, self.archiver_queue_arguments())
        for key in ARCHIVER_EVENTS:
            await archiver.bind(events, routing_key=key)
        await _declare_queue(channel, self.archiver_retry_queue, self.archiver_retry_queue_arguments())
        ledger = await _declare_queue(channel, self.ledger_queue, self.archiver_queue_arguments())
        await ledger.bind(events, routing_key=EVENT_GENERATION_FINISHED)
        return DeclaredTopology(
            requests=requests,
            request_queue=request_queue,
            cancel=cancel,
            events=events,
            archiver_queue=archiver,
            dead_letter_queue=dlq,
            ledger_queue=ledger,
        )

    async def delete(self, channel: AbstractChannel) -> None:
        """Remove every shared object (tests and tear-down tooling only)."""
        for queue in (
            self.requests_queue,
            self.archiver_queue,
            self.archiver_retry_queue,
            self.ledger_queue,
            self.dead_letter_queue,
        ):
            await channel.queue_delete(queue)
        for exchange in (
            self.requests_exchange,
            self.cancel_exchange,
            self.events_exchange,
            self.dead_letter_exchange,
        ):
            await channel.exchange_delete(exchange)

    def integrator_reply_prefix(self, user: str) -> str:
        """Reply queues integrator ``user`` may declare and consume: ``<prefix>.integrations.<user>.*``
        (a server-named ``amq.gen-*`` queue would need configure rights on every such queue)."""
        return f"{self.prefix}.integrations.{user}."

    def integrator_permissions(self, user: str, vhost: str = "/") -> dict[str, str]:
        """Integrator ``user``'s vhost permissions: publish to the request exchange, declare and
        consume its own reply queues; nothing else (no other queue, no cancel or event exchange)."""
        own = f"^{re.escape(self.integrator_reply_prefix(user))}"
        return {
            "user": user,
            "vhost": vhost,
            "configure": own,
            "write": f"^{re.escape(self.requests_exchange)}$",
            "read": own,
        }

    # -- export ----------------------------------------------------------------------------------
    def definitions(
        self, vhost: str = "/", integrators: Sequence[str] = (INTEGRATOR_USER,)
    ) -> dict[str, Any]:
        """The topology as a RabbitMQ definitions document (``rabbitmqctl import_definitions``),
        with a user for each of ``integrators`` and its permissions (:meth:`integrator_permissions`).

        The users carry no password: importing the document creates them unable to log in (and
        clears a password set before). The compose and Kubernetes import jobs add each one's
        generated password (``compose/rabbitmq_definitions.py``)."""

        def exchange(name: str, kind: str) -> dict[str, Any]:
            return {
                "name": name,
                "vhost": vhost,
                "type": kind,
                "durable": True,
                "auto_delete": False,
                "internal": False,
                "arguments": {},
            }

        def queue(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
            return {
                "name": name,
                "vhost": vhost,
                "durable": True,
                "auto_delete": False,
                "arguments": arguments,
            }

        def binding(source: str, destination: str, key: str) -> dict[str, Any]:
            return {
                "source": source,
                "vhost": vhost,
                "destination": destination,
                "destination_type": "queue",
                "routing_key": key,
                "arguments": {},
            }

        return {
            "exchanges": [
                exchange(self.dead_letter_exchange, "fanout"),
                exchange(self.requests_exchange, "direct"),
                exchange(self.cancel_exchange, "fanout"),
                exchange(self.events_exchange, "topic"),
            ],
            "queues": [
                queue(self.dead_letter_queue, self.dead_letter_queue_arguments()),
                queue(self.requests_queue, self.request_queue_arguments()),
                queue(self.archiver_queue, self.archiver_queue_arguments()),
                queue(self.archiver_retry_queue, self.archiver_retry_queue_arguments()),
                queue(self.ledger_queue, self.archiver_queue_arguments()),
            ],
            "bindings": [
                binding(self.dead_letter_exchange, self.dead_letter_queue, "#"),
                binding(self.requests_exchange, self.requests_queue, REQUEST_ROUTING_KEY),
                *(binding(self.events_exchange, self.archiver_queue, key) for key in ARCHIVER_EVENTS),
                binding(self.events_exchange, self.ledger_queue, EVENT_GENERATION_FINISHED),
            ],
            "users": [{"name": user, "tags": ""} for user in integrators],
            "permissions": [self.integrator_permissions(user, vhost) for user in integrators],
        }


@dataclass(frozen=True, slots=True)
class DeclaredTopology:
    requests: AbstractExchange
    request_queue: AbstractQueue
    cancel: AbstractExchange
    events: AbstractExchange
    archiver_queue: AbstractQueue
    dead_letter_queue: AbstractQueue
    ledger_queue: AbstractQueue


async def _declare_queue(channel: AbstractChannel, name: str, arguments: dict[str, Any]) -> AbstractQueue:
    """Declare a durable queue; if it exists with other arguments, use it as it is.

    RabbitMQ never changes a queue's arguments on redeclare, it refuses (PRECONDITION_FAILED).
    Changing ``REQUEST_QUEUE_MAX_LENGTH`` on a live system must not crash-loop every service, so
    the existing queue is kept and the difference logged; the new limits take effect through a
    policy or when the drained queue is recreated (README, "Changing queue limits").
    """
    try:
        return await channel.declare_queue(name, durable=True, arguments=arguments)
    except ChannelPreconditionFailed as exc:
        log.error("queue_arguments_differ", queue=name, wanted=arguments, broker_said=str(exc))
        await channel.reopen()  # the broker closed the channel with the error
        return await channel.declare_queue(name, passive=True)
