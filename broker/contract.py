"""The machine-readable contract: an AsyncAPI 2.6 document and RabbitMQ definitions.

``python -m broker.contract`` rewrites ``broker/asyncapi.json`` and ``broker/definitions.json``
from the code; a test fails when the committed files drift from it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec

from broker.messages import (
    SCHEMA_VERSION,
    Cancel,
    ChatDone,
    ChatError,
    ChatRequest,
    SessionEvent,
    TokenChunk,
)
from broker.topology import (
    EVENT_SESSION_FINISHED,
    EVENT_SESSION_SPILLED,
    EVENT_SESSION_UPDATED,
    REQUEST_ROUTING_KEY,
    Topology,
)

HERE = Path(__file__).parent
ASYNCAPI_PATH = HERE / "asyncapi.json"
DEFINITIONS_PATH = HERE / "definitions.json"


def _message(struct: type[msgspec.Struct], summary: str) -> dict[str, Any]:
    return {
        "name": struct.__name__,
        "title": struct.__name__,
        "summary": summary,
        "contentType": "application/json",
        "correlationId": {"location": "$message.header#/correlation_id"},
        "headers": {
            "type": "object",
            "properties": {
                "x-request-id": {"type": "string", "description": "Request id, also in the body"},
                "traceparent": {"type": "string", "description": "W3C trace context, when present"},
            },
        },
        "payload": {"$ref": f"#/components/schemas/{struct.__name__}"},
    }


def asyncapi(topology: Topology | None = None) -> dict[str, Any]:
    t = topology or Topology()
    _, components = msgspec.json.schema_components(
        [ChatRequest, TokenChunk, ChatDone, ChatError, Cancel, SessionEvent],
        ref_template="#/components/schemas/{name}",
    )
    return {
        "asyncapi": "2.6.0",
        "info": {
            "title": "Enterprise chat pipeline: broker contract",
            "version": str(SCHEMA_VERSION),
            "description": (
                "Messages between gateways, inference workers and the archiver over RabbitMQ. "
                "Every body is JSON with schema_version, request_id, user_id and org_id; readers "
                "ignore unknown fields. Names below use the default prefix 'chat' (BROKER_PREFIX)."
            ),
        },
        "defaultContentType": "application/json",
        "channels": {
            t.requests_exchange: {
                "description": (
                    f"Direct exchange; routing key '{REQUEST_ROUTING_KEY}' -> quorum queue "
                    f"'{t.requests_queue}' (x-max-length, overflow reject-publish: a nack means "
                    f"'queue full'; dead-lettered to '{t.dead_letter_exchange}'). Set reply_to to "
                    "your exclusive reply queue, correlation_id to request_id, expiration to the "
                    "deadline. Publish with confirms."
                ),
                "publish": {"message": _message(ChatRequest, "Ask for a chat generation")},
            },
            "<reply_to>": {
                "description": (
                    "The requester's own exclusive queue, published to via the default exchange. "
                    "Replies carry correlation_id = request_id and a 'type' field: token* then "
                    "exactly one done or error. A new 'generation' value means the request was "
                    "redelivered and restarted."
                ),
                "subscribe": {
                    "message": {
                        "oneOf": [
                            _message(TokenChunk, "A coalesced run of generated text"),
                            _message(ChatDone, "The answer is complete, with usage"),
                            _message(ChatError, "The generation failed"),
                        ]
                    }
                },
            },
            t.cancel_exchange: {
                "description": "Fanout exchange; every worker stops the named generation.",
                "publish": {"message": _message(Cancel, "Stop a generation")},
            },
            t.events_exchange: {
                "description": (
                    f"Topic exchange of session events, routing keys '{EVENT_SESSION_UPDATED}', "
                    f"'{EVENT_SESSION_FINISHED}' and '{EVENT_SESSION_SPILLED}'; queue "
                    f"'{t.archiver_queue}' is bound to the last two. Publish '{EVENT_SESSION_FINISHED}' "
                    "to have a session archived now."
                ),
                "subscribe": {"message": _message(SessionEvent, "A session changed or finished")},
            },
            t.dead_letter_queue: {
                "description": "Rejected (invalid), expired and over-delivered messages, for inspection.",
            },
        },
        "components": {"schemas": components},
    }


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> None:
    ASYNCAPI_PATH.write_text(render(asyncapi()))
    DEFINITIONS_PATH.write_text(render(Topology().definitions()))
    print(f"wrote {ASYNCAPI_PATH} and {DEFINITIONS_PATH}")


if __name__ == "__main__":
    main()
