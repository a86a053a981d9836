"""One request's trace id (the caller's X-Request-ID) can be followed through the JSON logs of
gateway, worker and archiver, beside the server-generated request id that routed it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
from helpers import KeyPair, auth_header, simulator_url, wait_for
from processes import service_processes


def _lines(path: Path) -> list[dict[str, Any]]:
    events = []
    for raw in path.read_text().splitlines():
        if raw.startswith("{"):
            events.append(json.loads(raw))
    return events


async def test_trace_and_request_ids_cross_every_queue_hop(
    base_env: dict[str, str], simulator: Any, keys: KeyPair, amqp: Any, redis: Any, tmp_path: Path
) -> None:
    env = {**base_env, "LOG_JSON": "true", "LOG_LEVEL": "info"}
    trace_id = "trace-0123456789abcdef"
    async with service_processes() as services:
        await services.start(
            "inference_worker", {**env, "OLLAMA_URLS": simulator_url(simulator)}, log=tmp_path / "w.log"
        )
        await services.start(
            "archiver",
            {**env, "SESSION_IDLE_SECONDS": "0.5", "SWEEP_INTERVAL_SECONDS": "0.2"},
            log=tmp_path / "a.log",
        )
        _, port = await services.start(
            "gateway", {**env, "JWT_PUBLIC_KEY": keys.public_pem}, log=tmp_path / "g.log"
        )
        async with aiohttp.ClientSession() as http:
            headers = {**auth_header(keys.mint("tracer")), "X-Request-ID": trace_id}
            async with http.post(
                f"http://127.0.0.1:{port}/chat",
                json={"session_id": "t", "prompt": "follow me"},
                headers=headers,
            ) as response:
                assert response.status == 200
                await response.read()

        def seen(path: Path, event: str) -> bool:
            return any(e.get("trace_id") == trace_id and e.get("event") == event for e in _lines(path))

        async def archived() -> bool:
            return seen(tmp_path / "a.log", "session_archived")

        await wait_for(archived, timeout=30)
    gateway, worker, archiver = (_lines(tmp_path / name) for name in ("g.log", "w.log", "a.log"))
    request_ids = set()
    for service, events, event in (
        ("gateway", gateway, "chat_finished"),
        ("inference-worker", worker, "generation_finished"),
        ("archiver", archiver, "session_archived"),
    ):
        matching = [e for e in events if e.get("trace_id") == trace_id and e.get("event") == event]
        assert matching, f"{service} logged no {event} for {trace_id}"
        request_ids.add(matching[0]["request_id"])
        assert matching[0]["service"] == service
        assert matching[0]["level"] == "info"
        assert "timestamp" in matching[0]
    # One server-generated request id, the same in every hop, and never the caller's value.
    assert len(request_ids) == 1 and trace_id not in request_ids
