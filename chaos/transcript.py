"""What one client saw of one chat: the SSE events of its stream and of every resumed stream.

Built on bench's incremental SSE reader; this one also keeps the token text, the event ids
(RESUME_CONTRACT.md: tokens 0, 1, 2 ..., the final event the next number) and notes an id seen
twice or skipped, so a resumed stream can be checked for "exactly once, nothing skipped".
"""

from __future__ import annotations

import msgspec

from bench.parsers import SseParser

__all__ = ["TranscriptParser"]


class _Token(msgspec.Struct):
    content: str = ""


class _Final(msgspec.Struct):
    error: str | None = None
    request_id: str | None = None


_token = msgspec.json.Decoder(_Token)
_final = msgspec.json.Decoder(_Final)


class TranscriptParser(SseParser):
    """``feed`` bytes from the first stream, then from each resumed one, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.last_id: int | None = None
        self.request_id: str | None = None
        self.anomalies: list[str] = []

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @property
    def finished(self) -> bool:
        return self.done or self.error is not None

    def _record(self, block: bytes) -> None:
        event, data, ident = b"", b"", None
        for line in block.split(b"\n"):
            if line.startswith(b"event:"):
                event = line[6:].strip()
            elif line.startswith(b"data:"):
                data = line[5:].strip()
            elif line.startswith(b"id:"):
                ident = line[3:].strip()
        if event not in {b"token", b"done", b"error"} or self.finished:
            return
        if ident is not None and not self._in_order(ident):
            return
        try:
            if event == b"token":
                self.parts.append(_token.decode(data).content)
                self.tokens += 1
                return
            final = _final.decode(data)
        except msgspec.DecodeError:
            self.anomalies.append(f"undecodable {event.decode()} event")
            return
        self.request_id = final.request_id or self.request_id
        if event == b"done":
            self.done = True
        else:
            self.error = final.error or "unknown"

    def _in_order(self, ident: bytes) -> bool:
        """False for an event already seen (dropped); a gap is noted and the event kept."""
        try:
            number = int(ident)
        except ValueError:
            self.anomalies.append(f"event id {ident!r} is not a number")
            return True
        expected = 0 if self.last_id is None else self.last_id + 1
        if number < expected:
            self.anomalies.append(f"event {number} delivered again")
            return False
        if number > expected:
            self.anomalies.append(f"events {expected}-{number - 1} skipped")
        self.last_id = number
        return True
