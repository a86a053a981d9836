"""Ask the inference workers for one chat answer straight over RabbitMQ, as an internal system does
(README, "The broker contract"); it needs only aio-pika, not this repository's code.

    RABBITMQ_URL=amqp://integrator:<password>@rabbitmq:5672/ \\
        python examples/queue_integrator.py --org-id org-acme "Summarize our refund policy"

What it does, step by step:
1. declares its own exclusive reply queue, ``<prefix>.integrations.<rabbitmq user>.<random>`` (the
   only queues an integrator's RabbitMQ user may declare and read);
2. publishes a ``chat.request`` to the exchange ``<prefix>.requests`` (routing key ``chat``) with
   publisher confirms (a nack means the queue is full), ``reply_to`` = that queue,
   ``correlation_id`` = the request id (a random UUID), ``user_id`` = its RabbitMQ user (the broker
   checks it, the workers authorize by it: the body must claim the org the workers map this user
   to and a ``svc:<rabbitmq user>[:<name>]`` user id). The absolute deadline travels in the body
   (``deadline``, Unix seconds); the AMQP ``expiration`` is the time left, relative, in
   milliseconds as a string (aio-pika takes seconds and sends ``"120000"`` for 120). A request with
   no time left is sent without an expiration, so a worker answers it ``deadline_exceeded``
   instead of the broker dropping it unanswered;
3. reads the replies, ``token``* then one ``done`` or ``error``, either one per message
   (``--reply-mode message``, the default) or in ``batch`` messages whose ``frames`` may belong to
   other requests (each frame is checked by its ``request_id``); a new ``generation`` means the
   request was redelivered and its answer restarted;
4. prints the answer (and the model's tool calls, if any) on stdout, the usage on stderr.

Exit status: 0 answered; 1 an ``error`` reply (its code and message on stderr: ``invalid_request``,
``forbidden_identity``, ``deadline_exceeded`` ...); 2 no answer before the deadline (plus
``--grace``); 3 not queued (the queue is full).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from typing import Any

import aio_pika
from aio_pika.exceptions import DeliveryError
from yarl import URL

ANSWERED, ERROR_REPLY, NO_ANSWER, NOT_QUEUED = 0, 1, 2, 3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("prompt")
    parser.add_argument(
        "--org-id", required=True, help="the organization the workers map your RabbitMQ user to"
    )
    parser.add_argument("--user-id", help="default: svc:<your RabbitMQ user>")
    parser.add_argument("--model", default="llama3.2")
    parser.add_argument("--prefix", default="chat", help="the deployment's BROKER_PREFIX (default: chat)")
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds until the deadline (default 120)"
    )
    parser.add_argument(
        "--deadline", type=float, help="absolute deadline, Unix seconds (overrides --timeout)"
    )
    parser.add_argument(
        "--grace", type=float, default=10.0, help="wait this long past the deadline for a reply"
    )
    parser.add_argument("--reply-mode", choices=("message", "batch"), default="message")
    parser.add_argument("--session-id", help="keep the conversation in this session (history is per user_id)")
    parser.add_argument(
        "--omit",
        action="append",
        default=[],
        metavar="FIELD",
        help="leave FIELD out of the request (to see a refusal)",
    )
    return parser.parse_args(argv)


def build_request(args: argparse.Namespace, rabbitmq_user: str) -> dict[str, Any]:
    now = time.time()
    request: dict[str, Any] = {
        "type": "chat.request",
        "schema_version": 1,
        "request_id": str(uuid.uuid4()),
        "user_id": args.user_id or f"svc:{rabbitmq_user}",
        "org_id": args.org_id,
        "session_id": args.session_id,
        "record": args.session_id is not None,
        "prompt": args.prompt,
        "model": args.model,
        "deadline": args.deadline if args.deadline is not None else now + args.timeout,
        "created_at": now,
        "reply_mode": args.reply_mode,
        "trace_id": f"queue-integrator-{uuid.uuid4().hex[:8]}",
    }
    for name in args.omit:
        request.pop(name, None)
    return request


class Answer:
    """One request's replies, as they arrive."""

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.generation: str | None = None
        self.chunks: dict[int, str] = {}
        self.final: dict[str, Any] | None = None

    def add(self, reply: dict[str, Any]) -> None:
        if reply.get("request_id") != self.request_id or self.final is not None:
            return  # another request's frame in a shared batch, or after the end
        kind = reply.get("type")
        if kind == "alive":
            return
        if reply.get("generation") != self.generation:
            if self.chunks:
                print("[the request was redelivered: its answer restarted]", file=sys.stderr)
            self.generation, self.chunks = reply.get("generation"), {}
        if kind == "token":
            self.chunks.setdefault(reply["seq"], reply["content"])  # a replayed seq is dropped
        elif kind in {"done", "error"}:
            self.final = reply

    @property
    def text(self) -> str:
        return "".join(self.chunks[seq] for seq in sorted(self.chunks))


async def ask(args: argparse.Namespace, url: str) -> int:
    rabbitmq_user = URL(url).user or "guest"
    request = build_request(args, rabbitmq_user)
    deadline = float(request.get("deadline", time.time() + args.timeout))
    connection = await aio_pika.connect_robust(url, client_properties={"connection_name": "queue-integrator"})
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        replies = await channel.declare_queue(
            f"{args.prefix}.integrations.{rabbitmq_user}.{uuid.uuid4().hex}", exclusive=True
        )
        requests = await channel.get_exchange(f"{args.prefix}.requests", ensure=False)
        left = deadline - time.time()
        message = aio_pika.Message(
            json.dumps(request).encode(),
            content_type="application/json",
            type="chat.request",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=request["request_id"],
            correlation_id=request["request_id"],
            reply_to=replies.name,
            user_id=rabbitmq_user,
            expiration=left if left > 0 else None,  # seconds here; milliseconds on the wire
            headers={"x-request-id": request["request_id"], "x-trace-id": request["trace_id"]},
        )
        try:
            await requests.publish(message, routing_key="chat")
        except DeliveryError:
            print("not queued: the request queue is full, retry later", file=sys.stderr)
            return NOT_QUEUED
        answer = Answer(request["request_id"])
        try:
            async with asyncio.timeout(max(0.0, deadline - time.time()) + args.grace):
                async with replies.iterator(no_ack=True) as messages:
                    async for incoming in messages:
                        body = json.loads(incoming.body)
                        for reply in body["frames"] if body.get("type") == "batch" else [body]:
                            answer.add(reply)
                        if answer.final is not None:
                            break
        except TimeoutError:
            print("no answer before the deadline", file=sys.stderr)
            return NO_ANSWER
    final = answer.final
    assert final is not None
    if final["type"] == "error":
        print(f"error: {final['error']}: {final['message']}", file=sys.stderr)
        return ERROR_REPLY
    print(answer.text)
    if final.get("tool_calls"):
        print(json.dumps({"tool_calls": final["tool_calls"]}))
    print(f"usage: {json.dumps(final['usage'])} model={final['model']}", file=sys.stderr)
    return ANSWERED


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return asyncio.run(ask(args, os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")))


if __name__ == "__main__":
    raise SystemExit(main())
