"""The bench's modes and meters without the services: options, the broker-statistics reading,
HAProxy's sizing and stats parsing, memory figures, and the open-loop and hold drivers against a
small in-process SSE server. Counts are asserted, never timings."""

from __future__ import annotations

import asyncio
import os
import resource
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bench.__main__ import parse_args
from bench.cluster import ClusterError
from bench.loadgen import StreamGauge, client_session, run_hold, run_open_phase
from bench.management import published, reply_queue_pattern
from bench.memory import RssSample, rss_bytes, summarize
from bench.parsers import SseParser, StreamParser
from bench.profile import hotspots
from bench.proxy import gateway_slots, server_status
from devstack.limits import haproxy_maxconn, haproxy_processes, raise_open_files_limit


def test_hold_defaults_follow_the_pace() -> None:
    args = parse_args(["--hold", "2000", "--hold-seconds", "30", "--via-haproxy"])
    assert args.tokens_per_second == 1.0
    assert args.answer_tokens == 30
    assert args.ramp_seconds == 8.0
    assert args.worker_concurrency == 1100  # 2000 streams over 2 workers, +10 %
    assert args.request_timeout >= 30 + 8 + 60
    paced = parse_args(["--hold", "10", "--tokens-per-second", "5", "--hold-seconds", "3"])
    assert paced.answer_tokens == 15


def test_saturation_defaults_and_explicit_values() -> None:
    args = parse_args([])
    assert (args.tokens_per_second, args.answer_tokens, args.worker_concurrency) == (0.0, 24, 256)
    paced = parse_args(["--tokens-per-second", "50", "--answer-tokens", "200", "--concurrency", "500"])
    assert (paced.tokens_per_second, paced.answer_tokens, paced.worker_concurrency) == (50.0, 200, 275)


@pytest.mark.parametrize(
    "argv",
    [
        ["--hold", "10", "--rate", "5"],
        ["--rate", "5", "--quarter-load"],
        ["--rate", "0"],
        ["--gateway-url", "http://x", "--jwt-private-key", "k.pem", "--via-haproxy"],
    ],
)
def test_conflicting_modes_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(argv)


def test_reply_queue_counters() -> None:
    items: list[dict[str, Any]] = [
        {"name": "bench1a.replies.gw-0.x", "message_stats": {"publish": 120, "deliver_no_ack": 120}},
        {"name": "bench1a.replies.gw-1.y", "message_stats": {"publish": 30}},
        {"name": "bench1a.replies.gw-2.z"},  # declared moments ago: no statistics yet
        {"name": "bench1a.requests", "message_stats": {"publish": 999}},
        {"name": "bench1ab.replies.other", "message_stats": {"publish": 999}},
        {"name": "chat.replies.gateway-1.q", "message_stats": {"publish": 999}},
    ]
    assert published(items, "bench1a") == 150
    assert reply_queue_pattern("a.b") == "^a\\.b\\.replies\\."


def test_haproxy_sizing() -> None:
    # 20,000 descriptors (this box's hard limit) hold 9,950 proxied streams per process.
    assert haproxy_maxconn(20_000, 11_000) == 9_950
    assert haproxy_maxconn(65_536, 11_000) == 11_000
    assert haproxy_processes(11_000, 9_950) == 2
    assert haproxy_processes(3_000, 9_950) == 1


def test_open_files_limit_is_raised_to_what_is_allowed() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        now = raise_open_files_limit(min(soft + 1, hard))
        assert now >= min(soft + 1, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_gateway_slots_and_stats() -> None:
    slots = gateway_slots(["http://127.0.0.1:5001", "http://127.0.0.1:5002/"])
    assert slots["GATEWAY1"] == "127.0.0.1:5001" and slots["GATEWAY2"] == "127.0.0.1:5002"
    assert slots["GATEWAY3"].startswith("127.0.0.1:")
    with pytest.raises(ClusterError):
        gateway_slots([f"http://127.0.0.1:{p}" for p in range(4)])
    csv_text = (
        "# pxname,svname,qcur,status,\n"
        "chat,FRONTEND,,OPEN,\n"
        "gateways,gateway1,0,UP,\n"
        "gateways,gateway2,0,UP 1/2,\n"
        "gateways,gateway3,0,DOWN,\n"
        "gateways,BACKEND,0,UP,\n"
        "auth,auth1,0,DOWN,\n"
    )
    assert server_status(csv_text) == {"gateway1": "UP", "gateway2": "UP 1/2", "gateway3": "DOWN"}


def test_memory_figures() -> None:
    assert (rss_bytes(os.getpid()) or 0) > 0
    timeline = [
        RssSample(0.0, {"gateway": 100.0, "worker": 50.0}),
        RssSample(1.0, {"gateway": 180.0}),
        RssSample(2.0, {"gateway": 150.0, "worker": 70.0}),
    ]
    figures = summarize(timeline)
    assert (figures["gateway"].start_mb, figures["gateway"].peak_mb, figures["gateway"].end_mb) == (
        100.0,
        180.0,
        150.0,
    )
    assert figures["gateway"].growth_mb == 80.0 and figures["worker"].growth_mb == 20.0


class _SseTarget:
    """Streams from the fake server below."""

    name = "pipeline"

    def __init__(self, url: str) -> None:
        self.url = url
        self.requests: list[tuple[int, int]] = []

    def request(self, loop: int, n: int) -> tuple[str, dict[str, str], bytes]:
        self.requests.append((loop, n))
        return self.url, {}, b"{}"

    def parser(self) -> StreamParser:
        return SseParser()


HELD = 6


@pytest.fixture
async def sse_server() -> AsyncIterator[tuple[TestServer, asyncio.Event]]:
    """Answers every chat with one token, then holds the stream until ``release`` is set."""
    release = asyncio.Event()

    async def chat(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b'event: token\ndata: {"content":"a","seq":0}\n\n')
        await release.wait()
        await response.write(b"event: done\ndata: {}\n\n")
        return response

    app = web.Application()
    app.router.add_post("/chat", chat)
    server = TestServer(app)
    await server.start_server()
    try:
        yield server, release
    finally:
        release.set()
        await server.close()


async def test_hold_keeps_every_stream_open_until_released(
    sse_server: tuple[TestServer, asyncio.Event],
) -> None:
    server, release = sse_server
    target = _SseTarget(str(server.make_url("/chat")))

    class ReleasingGauge(StreamGauge):
        """Lets the server finish once the client has every stream open at once."""

        def opened(self) -> None:
            super().opened()
            if self.open == HELD:
                release.set()

    gauge = ReleasingGauge()
    async with client_session() as session:
        result = await run_hold(session, target, streams=HELD, ramp=0.0, request_timeout=30, gauge=gauge)
    assert result.ok == HELD and not result.errors
    assert result.peak_open_streams == HELD and gauge.open == 0
    assert sorted(target.requests) == [(i, 0) for i in range(HELD)]


async def test_open_loop_starts_the_planned_number_of_chats(
    sse_server: tuple[TestServer, asyncio.Event],
) -> None:
    server, release = sse_server
    release.set()
    target = _SseTarget(str(server.make_url("/chat")))
    async with client_session() as session:
        result = await run_open_phase(
            session, target, rate=200, duration=0.1, warmup=0.05, request_timeout=30, sessions=4
        )
    assert result.chats_total == 30  # (0.05 + 0.1) s x 200 chats/s, warm-up included
    assert result.offered_rate == 200 and not result.errors
    assert (3, 2) in target.requests  # chat 11: conversation 11 % 4, turn 11 // 4


def test_profile_hotspots_from_collapsed_stacks() -> None:
    base = "<module> (inference_worker/__main__.py:3);run (uvloop/__init__.py:82)"
    raw = [
        f"{base};_handle (inference_worker/worker.py:10);write (asyncio/streams.py:330) 30",
        f"{base};_handle (inference_worker/worker.py:12);write (asyncio/streams.py:331) 20",
        f"{base};chat (/opt/x/site-packages/aiohttp/client.py:5) 50",
        "not a stack line",
    ]
    assert hotspots(raw) == [("write (asyncio/streams.py)", 50.0), ("chat (aiohttp/client.py)", 50.0)]
    below = dict(hotspots(raw, inclusive=True))  # the entry point and the loop are in every sample
    assert below == {
        "chat (aiohttp/client.py)": 50.0,
        "_handle (inference_worker/worker.py)": 50.0,
        "write (asyncio/streams.py)": 50.0,
    }
    assert hotspots([]) == []
