"""Readers of a chat's streamed answer: Server-Sent Events (gateway) and NDJSON (Ollama, simulator).

Each is fed the bytes as they arrive, in any chunking, and counts token events until the final
event or an error.
"""

from __future__ import annotations

from typing import Protocol

import msgspec


class StreamParser(Protocol):
    tokens: int
    done: bool
    error: str | None

    def feed(self, data: bytes) -> None: ...


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
