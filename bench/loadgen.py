"""The load generator: closed loops, an open-loop arrival rate, or a hold of N open streams.

- ``run_phase``: N loops, each running streamed chats back to back for a fixed time (saturation).
- ``run_open_phase``: chats start at a fixed rate whatever the answers take (latency at a given
  load, free of coordinated omission).
- ``run_hold``: N streams opened over a ramp, each one chat, held until they end (memory, limits).

One ``ClientSession`` (unlimited, keep-alive connector) serves every chat. A target says how to
build a request and how to read its stream: the gateway answers Server-Sent Events, the simulator
Ollama's NDJSON. Time-to-first-token is taken when the first token arrives, the full time when
the final event does. Chats that start during the warm-up are run but not counted.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp
import msgspec

from bench.parsers import NdjsonParser, SseParser, StreamParser

_encoder = msgspec.json.Encoder()
ERROR_BACKOFF = 0.05  # after a failed chat, so a dead target does not turn a loop into a busy spin


class Target(Protocol):
    name: str

    def request(self, loop: int, n: int) -> tuple[str, dict[str, str], bytes]:
        """URL, headers and body of chat ``n`` of loop ``loop``."""
        ...

    def parser(self) -> StreamParser: ...


_PROMPTS = (
    "Summarise our quarterly sales plan in one paragraph.",
    "What are the main risks in the vendor contract?",
    "Draft a short reply thanking the customer for the feedback.",
    "Explain the on-call rotation to a new engineer.",
)


def prompt_for(n: int) -> str:
    return f"Question {n}: {_PROMPTS[n % len(_PROMPTS)]}"


class GatewayTarget:
    """``POST /chat`` on the gateways, round-robin; sessions of ``turns`` chats per user."""

    name = "pipeline"

    def __init__(
        self, base_urls: Sequence[str], tokens: Sequence[str], *, concurrency: int, turns: int, run_id: str
    ) -> None:
        self._urls = [url.rstrip("/") + "/chat" for url in base_urls]
        self._headers = [
            {"Authorization": f"Bearer {token}", "Content-Type": "application/json"} for token in tokens
        ]
        self._concurrency = concurrency
        self._turns = turns
        self._run_id = run_id
        self._next = 0

    def request(self, loop: int, n: int) -> tuple[str, dict[str, str], bytes]:
        session = loop + (n // self._turns) * self._concurrency  # unique across loops
        body = {"session_id": f"{self._run_id}-{session}", "prompt": prompt_for(n), "stream": True}
        self._next += 1
        url = self._urls[self._next % len(self._urls)]
        return url, self._headers[session % len(self._headers)], _encoder.encode(body)

    def parser(self) -> StreamParser:
        return SseParser()


class SimulatorTarget:
    """``POST /api/chat`` straight to the simulator: the same chats without the pipeline."""

    name = "direct"

    def __init__(self, base_url: str, model: str = "llama3.2") -> None:
        self._url = base_url.rstrip("/") + "/api/chat"
        self._model = model
        self._headers = {"Content-Type": "application/json"}

    def request(self, loop: int, n: int) -> tuple[str, dict[str, str], bytes]:
        messages = [{"role": "user", "content": prompt_for(n)}]
        body = {"model": self._model, "messages": messages, "stream": True}
        return self._url, self._headers, _encoder.encode(body)

    def parser(self) -> StreamParser:
        return NdjsonParser()


@dataclass(slots=True)
class StreamGauge:
    """Streams open right now (answer headers received, stream not ended) and the most at once."""

    open: int = 0
    peak: int = 0

    def opened(self) -> None:
        self.open += 1
        self.peak = max(self.peak, self.open)

    def closed(self) -> None:
        self.open -= 1


@dataclass(slots=True)
class PhaseResult:
    """Counted chats of one phase; times in seconds."""

    name: str
    concurrency: int
    duration: float
    ttft: list[float] = field(default_factory=list)
    full: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    warmup_chats: int = 0
    token_events: int = 0  # SSE token events / NDJSON content lines of the counted chats
    offered_rate: float | None = None  # open loop: chats started per second
    peak_open_streams: int | None = None  # hold: the most streams open at once

    @property
    def ok(self) -> int:
        return len(self.full)

    @property
    def chats_total(self) -> int:
        """Every chat the phase ran, warm-up included: what its CPU and broker traffic served."""
        return self.warmup_chats + self.ok + sum(self.errors.values())

    def count(self, outcome: _Outcome, *, measured: bool) -> None:
        if not measured:
            self.warmup_chats += 1
        elif outcome.error is not None:
            self.errors[outcome.error] += 1
        else:
            assert outcome.ttft is not None and outcome.full is not None
            self.ttft.append(outcome.ttft)
            self.full.append(outcome.full)
            self.token_events += outcome.tokens


@dataclass(frozen=True, slots=True)
class _Outcome:
    ttft: float | None = None
    full: float | None = None
    error: str | None = None
    tokens: int = 0


async def chat_once(
    session: aiohttp.ClientSession,
    target: Target,
    loop: int,
    n: int,
    timeout: aiohttp.ClientTimeout,
    gauge: StreamGauge | None = None,
) -> _Outcome:
    """One streamed chat; every failure becomes an error kind, never an exception."""
    url, headers, body = target.request(loop, n)
    parser = target.parser()
    started = time.perf_counter()
    ttft: float | None = None
    full: float | None = None
    streaming = False
    try:
        async with session.post(url, data=body, headers=headers, timeout=timeout) as response:
            if response.status != 200:
                await response.read()
                return _Outcome(error=f"http_{response.status}")
            if gauge is not None:
                gauge.opened()
                streaming = True
            async for data in response.content.iter_any():
                if full is not None:
                    continue  # drain to EOF so the connection goes back to the pool
                parser.feed(data)
                if ttft is None and parser.tokens:
                    ttft = time.perf_counter() - started
                if parser.error is not None:
                    return _Outcome(error=parser.error)
                if parser.done:
                    full = time.perf_counter() - started
    except TimeoutError:
        return _Outcome(error="timeout")
    except aiohttp.ClientError as exc:
        return _Outcome(error=f"client_{type(exc).__name__}")
    finally:
        if streaming and gauge is not None:
            gauge.closed()
    if full is None:
        return _Outcome(error="stream_ended_early")
    if ttft is None:
        return _Outcome(error="no_tokens")
    return _Outcome(ttft, full, tokens=parser.tokens)


async def run_phase(
    session: aiohttp.ClientSession,
    target: Target,
    *,
    concurrency: int,
    duration: float,
    warmup: float,
    request_timeout: float,
) -> PhaseResult:
    """Run ``concurrency`` loops for ``warmup + duration`` seconds; count chats started after warm-up."""
    result = PhaseResult(target.name, concurrency, duration)
    timeout = aiohttp.ClientTimeout(total=request_timeout)
    measure_from = time.perf_counter() + warmup
    stop_at = measure_from + duration

    async def chat_loop(index: int) -> None:
        n = 0
        while (started := time.perf_counter()) < stop_at:
            outcome = await chat_once(session, target, index, n, timeout)
            n += 1
            result.count(outcome, measured=started >= measure_from)
            if outcome.error is not None:
                await asyncio.sleep(ERROR_BACKOFF)

    async with asyncio.TaskGroup() as group:
        for index in range(concurrency):
            group.create_task(chat_loop(index))
    return result


async def run_open_phase(
    session: aiohttp.ClientSession,
    target: Target,
    *,
    rate: float,
    duration: float,
    warmup: float,
    request_timeout: float,
    sessions: int,
    name: str | None = None,
) -> PhaseResult:
    """Start a chat every ``1/rate`` seconds for ``warmup + duration`` seconds, whatever the
    answers take; count those started after the warm-up. Chat ``i`` is turn ``i // sessions`` of
    conversation ``i % sessions``."""
    if rate <= 0:
        raise ValueError("rate must be > 0")
    result = PhaseResult(name or target.name, sessions, duration, offered_rate=rate)
    timeout = aiohttp.ClientTimeout(total=request_timeout)
    start = time.perf_counter()
    measure_from = start + warmup
    total = int((warmup + duration) * rate)

    async def one(i: int) -> None:
        started = time.perf_counter()
        outcome = await chat_once(session, target, i % sessions, i // sessions, timeout)
        result.count(outcome, measured=started >= measure_from)

    async with asyncio.TaskGroup() as group:
        for i in range(total):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            group.create_task(one(i))
    return result


async def run_hold(
    session: aiohttp.ClientSession,
    target: Target,
    *,
    streams: int,
    ramp: float,
    request_timeout: float,
    gauge: StreamGauge,
    name: str = "hold",
) -> PhaseResult:
    """Open ``streams`` chats evenly over ``ramp`` seconds and wait until every one has ended.

    Each is a single chat (its length is the simulator's pace times the answer); ``gauge`` counts
    the open streams, and the result records the most that were open at once.
    """
    result = PhaseResult(name, streams, 0.0)
    timeout = aiohttp.ClientTimeout(total=request_timeout)
    start = time.perf_counter()

    async def one(i: int) -> None:
        outcome = await chat_once(session, target, i, 0, timeout, gauge)
        result.count(outcome, measured=True)

    async with asyncio.TaskGroup() as group:
        for i in range(streams):
            delay = start + ramp * i / streams - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            group.create_task(one(i))
    result.duration = time.perf_counter() - start
    result.peak_open_streams = gauge.peak
    return result


def client_session() -> aiohttp.ClientSession:
    """Keep-alive connections without a pool limit; no cookies, no decompression."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60),
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
    )
