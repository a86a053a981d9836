"""A raw-socket HTTP/1.1 client for what aiohttp's client will not send: unknown methods, broken
framing, oversized headers, and requests trickled a byte at a time (slowloris)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from dataclasses import dataclass
from typing import Any


@dataclass
class RawResponse:
    """The first response on the connection (status 0: closed without one)."""

    status: int
    headers: dict[str, str]  # names lower-cased
    body: bytes
    elapsed: float  # seconds from connecting to the end of the response (or the close)
    closed: bool  # the server closed the connection after it
    sent_all: bool  # every trickled byte went out before the answer

    def json(self) -> Any:
        return json.loads(self.body)


async def exchange(
    port: int,
    data: bytes,
    *,
    trickle: bytes = b"",
    interval: float = 0.3,
    timeout: float = 15.0,
    close_wait: float = 2.0,
    host: str = "127.0.0.1",
) -> RawResponse:
    """Send ``data``, then ``trickle`` one byte every ``interval`` seconds, and read the answer.

    Only ``Content-Length`` bodies are read (every error answer here has one).
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(data)
    sent = asyncio.Event()

    async def drip() -> None:
        for index in range(len(trickle)):
            await asyncio.sleep(interval)
            writer.write(trickle[index : index + 1])
            await writer.drain()
        sent.set()

    dripper = asyncio.create_task(drip())
    if not trickle:
        sent.set()
    status, headers, body = 0, {}, b""
    try:
        async with asyncio.timeout(timeout):
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            for line in lines[1:]:
                if ":" in line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
    except asyncio.IncompleteReadError as exc:  # closed before a (whole) response
        body = exc.partial
    elapsed = loop.time() - start
    sent_all = sent.is_set()
    dripper.cancel()
    with contextlib.suppress(asyncio.CancelledError, OSError):
        await dripper
    closed = reader.at_eof()
    if not closed:
        try:
            async with asyncio.timeout(close_wait):
                closed = await reader.read(1) == b""
        except TimeoutError:
            closed = False
        except OSError:
            closed = True
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return RawResponse(status, headers, body, elapsed, closed, sent_all)


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def post_head(path: str, length: int, *, host: str = "localhost", extra: str = "") -> bytes:
    """The head of a JSON POST whose body follows separately."""
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n{extra}\r\n"
    ).encode()
