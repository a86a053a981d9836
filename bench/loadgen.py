"""The load generator: N loops, each running streamed chats back to back for a fixed time.

One ``ClientSession`` (unlimited, keep-alive connector) serves every loop. A target says how to
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

_encoder = msgspec.json.Encoder()
ERROR_BACKOFF = 0.05  # after a failed chat, so a dead target does not turn a loop into a busy spin


class StreamParser(Protocol):
    tokens: int
    done: bool
    error: str | None

    def feed(self, data: bytes) -> None: ...


class Target(Protocol):
    name: str

    def request(self, loop: int, n: int) -> tuple[str, dict[str, str], bytes]:
        """URL, headers and body of chat ``n`` of loop ``loop``."""
        ...

    def parser(self) -> StreamParser: ...


class _SseError(msgspec.Struct):
    error: str = "unknown"


_sse_error_decoder = msgspec.json.Decoder(_SseError)


class _DelimitedParser:
    """Splits a byte stream into records at ``separator`` and counts tokens, done and errors."""

    separator = b"\n"

    def __init__(self) -> None:
        self._buffer = b""
        self.tokens = 0
        self.done = False
        self.error: str | None = None

    def feed(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        start, step = 0, len(self.separator)
        while (end := buffer.find(self.separator, start)) >= 0:
            if end > start:
                self._record(buffer[start:end])
            start = end + step
        self._buffer = buffer[start:]

    def _record(self, raw: bytes) -> None:
        raise NotImplementedError


class SseParser(_DelimitedParser):
    """Incremental SSE reader counting ``token`` events until ``done`` or ``error``."""

    separator = b"\n\n"

    def _record(self, block: bytes) -> None:
        event, data = b"message", b""
        for line in block.split(b"\n"):
            if line.startswith(b"event:"):
                event = line[6:].strip()
            elif line.startswith(b"data:"):
                data = line[5:].strip()
        if event == b"token":
            self.tokens += 1
        elif event == b"done":
            self.done = True
        elif event == b"error":
            try:
                self.error = "event_" + _sse_error_decoder.decode(data).error
            except msgspec.DecodeError:
                self.error = "event_error_undecodable"


class _NdMessage(msgspec.Struct):
    content: str = ""


class _NdLine(msgspec.Struct):
    message: _NdMessage | None = None
    done: bool = False
    error: str | None = None


_nd_decoder = msgspec.json.Decoder(_NdLine)


class NdjsonParser(_DelimitedParser):
    """Incremental reader of Ollama's ``/api/chat`` stream (one JSON object per line)."""

    def _record(self, raw: bytes) -> None:
        try:
            line = _nd_decoder.decode(raw)
        except msgspec.DecodeError:
            self.error = "ndjson_undecodable"
            return
        if line.error is not None:
            self.error = "ollama_error"
        elif line.done:
            self.done = True
        elif line.message is not None and line.message.content:
            self.tokens += 1


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

    @property
    def ok(self) -> int:
        return len(self.full)


@dataclass(frozen=True, slots=True)
class _Outcome:
    ttft: float | None = None
    full: float | None = None
    error: str | None = None
    tokens: int = 0


async def chat_once(
    session: aiohttp.ClientSession, target: Target, loop: int, n: int, timeout: aiohttp.ClientTimeout
) -> _Outcome:
    """One streamed chat; every failure becomes an error kind, never an exception."""
    url, headers, body = target.request(loop, n)
    parser = target.parser()
    started = time.perf_counter()
    ttft: float | None = None
    full: float | None = None
    try:
        async with session.post(url, data=body, headers=headers, timeout=timeout) as response:
            if response.status != 200:
                await response.read()
                return _Outcome(error=f"http_{response.status}")
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
            if started < measure_from:
                result.warmup_chats += 1
            elif outcome.error is not None:
                result.errors[outcome.error] += 1
            else:
                assert outcome.ttft is not None and outcome.full is not None
                result.ttft.append(outcome.ttft)
                result.full.append(outcome.full)
                result.token_events += outcome.tokens
            if outcome.error is not None:
                await asyncio.sleep(ERROR_BACKOFF)

    async with asyncio.TaskGroup() as group:
        for index in range(concurrency):
            group.create_task(chat_loop(index))
    return result


def client_session() -> aiohttp.ClientSession:
    """Keep-alive connections without a pool limit; no cookies, no decompression."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60),
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
    )
