"""Admitting a request message: who published it, whether it decodes, and whether its publisher
may claim the identity it names. A message refused here is never taken up: it is answered with an
``error`` reply when it has a ``reply_to`` (so the publisher is not left waiting) and dead-lettered.

Who published it is the AMQP ``user_id`` property, which RabbitMQ validates: the broker refuses a
message whose ``user_id`` differs from the RabbitMQ user of the connection that publishes it. So:

- a **trusted publisher** (``WORKER_TRUSTED_PUBLISHERS``, default the worker's own broker user, which
  the gateways share in every shipped deployment) may claim any ``user_id`` and ``org_id``: the
  gateways set them from a verified token or API key;
- an **integrator** (``WORKER_INTEGRATORS``, RabbitMQ user -> its organization) must claim its own
  ``org_id``, a ``user_id`` of ``svc:<its RabbitMQ user>`` or ``svc:<its RabbitMQ user>:<anything>``
  (its own end users, kept apart from everyone else's), and no ``key_id``;
- anyone else, and a message without a ``user_id`` property, is refused ``forbidden_identity``.

A body that does not decode as a request is refused ``invalid_request`` with msgspec's account of
what is wrong. The error reply is addressed from what the body says (read leniently: any JSON
object's ``request_id``, ``user_id``, ``org_id``, ``trace_id``, ``reply_mode``), else from the
message's properties (``correlation_id``, ``message_id``, ``user_id``); it carries the message's
``correlation_id``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
from aio_pika.abc import AbstractIncomingMessage

from broker.messages import ChatRequest, EmbedRequest, ReplyMode, decode_request

__all__ = ["INTEGRATOR_USER_PREFIX", "Claimed", "Publishers", "Refusal"]

# An integrator's requests name users ``svc:<its RabbitMQ user>[:<anything>]``.
INTEGRATOR_USER_PREFIX = "svc:"

INVALID_REQUEST = "invalid_request"
FORBIDDEN_IDENTITY = "forbidden_identity"


class Refusal(Exception):
    """The message is not taken up: ``code`` for machines, ``message`` for the publisher."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Publishers:
    """Who may publish requests, and what each may claim (see the module docstring)."""

    trusted: frozenset[str]
    integrators: Mapping[str, str]

    def admit(self, message: AbstractIncomingMessage) -> ChatRequest | EmbedRequest:
        """The request ``message`` carries, or :class:`Refusal`."""
        publisher = message.user_id
        if publisher is None or (publisher not in self.trusted and publisher not in self.integrators):
            raise Refusal(
                FORBIDDEN_IDENTITY,
                f"RabbitMQ user {publisher!r} may not publish requests"
                if publisher
                else "the message has no user_id property (set it to your RabbitMQ user)",
            )
        try:
            request = decode_request(message.body)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise Refusal(INVALID_REQUEST, f"not a valid request: {exc}") from exc
        if publisher not in self.trusted:
            self._check_claims(publisher, request)
        return request

    def _check_claims(self, publisher: str, request: ChatRequest | EmbedRequest) -> None:
        org_id = self.integrators[publisher]
        own = f"{INTEGRATOR_USER_PREFIX}{publisher}"
        if request.org_id != org_id:
            raise Refusal(FORBIDDEN_IDENTITY, f"RabbitMQ user {publisher!r} may claim org_id {org_id!r} only")
        if request.user_id != own and not request.user_id.startswith(f"{own}:"):
            raise Refusal(
                FORBIDDEN_IDENTITY,
                f"RabbitMQ user {publisher!r} may claim user_id {own!r} or {own + ':<name>'!r} only",
            )
        if isinstance(request, ChatRequest) and request.key_id:
            raise Refusal(FORBIDDEN_IDENTITY, "key_id is set by the gateways only")


@dataclass(frozen=True, slots=True)
class Claimed:
    """Who a refused message says it is from and for, read leniently (to address its error)."""

    request_id: str
    user_id: str
    org_id: str
    trace_id: str
    reply_mode: ReplyMode
    correlation_id: str

    @classmethod
    def read(cls, message: AbstractIncomingMessage) -> Claimed:
        try:
            body: Any = msgspec.json.decode(message.body)
        except msgspec.DecodeError:
            body = None
        fields: dict[str, Any] = body if isinstance(body, dict) else {}

        def text(name: str, fallback: str | None) -> str:
            value = fields.get(name)
            return value if isinstance(value, str) else fallback or ""

        request_id = text("request_id", message.correlation_id or message.message_id)
        return cls(
            request_id=request_id,
            user_id=text("user_id", message.user_id),
            org_id=text("org_id", None),
            trace_id=text("trace_id", None),
            reply_mode="batch" if fields.get("reply_mode") == "batch" else "message",
            correlation_id=message.correlation_id or request_id,
        )
