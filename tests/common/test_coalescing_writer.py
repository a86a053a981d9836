"""common.amqp.CoalescingWriter on a real loopback socket: the frames written in one event-loop turn
reach the peer together, whole and in order, by the end of that turn; ``drain`` does not force a
write per frame; ``close`` writes what is buffered."""

from __future__ import annotations

import array
import asyncio
import fcntl
import socket
import termios
from collections.abc import AsyncIterator

import pytest
from yarl import URL

from common.amqp import CoalescingTransportFactory, CoalescingWriter


class _Peer:
    """A TCP server that records every chunk it reads."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.got = asyncio.Event()
        self.connected = asyncio.Event()
        self.sock: socket.socket | None = None

    def unread(self) -> int:
        """Bytes that arrived in the server socket and were not read yet (on the loopback a
        ``send()`` lands there before it returns)."""
        assert self.sock is not None
        buf = array.array("i", [0])
        fcntl.ioctl(self.sock.fileno(), termios.FIONREAD, buf)
        return buf[0]

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.sock = writer.get_extra_info("socket")
        self.connected.set()
        while chunk := await reader.read(65536):
            self.data += chunk
            self.got.set()
        writer.close()

    async def wait_for(self, size: int) -> bytes:
        async with asyncio.timeout(5):
            while len(self.data) < size:
                self.got.clear()
                await self.got.wait()
        return bytes(self.data)


@pytest.fixture
async def peer() -> AsyncIterator[tuple[_Peer, int]]:
    p = _Peer()
    server = await asyncio.start_server(p.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield p, port
    server.close()
    await server.wait_closed()


async def _connect(port: int) -> tuple[asyncio.StreamReader, CoalescingWriter]:
    reader, writer = await CoalescingTransportFactory().create(URL(f"amqp://127.0.0.1:{port}/"))
    assert isinstance(writer, CoalescingWriter)
    return reader, writer


async def _connected(peer: _Peer, port: int) -> CoalescingWriter:
    _, writer = await _connect(port)
    await asyncio.wait_for(peer.connected.wait(), 5)
    return writer


async def test_writes_of_one_turn_leave_together_in_order(peer: tuple[_Peer, int]) -> None:
    p, port = peer
    writer = await _connected(p, port)
    frames = [b"frame-%d;" % i for i in range(50)]
    for frame in frames:
        writer.write(frame)
        await writer.drain()  # as aiormq does after every frame set: no write of its own
    # No send() yet: the frames are written at the end of this turn, as one chunk.
    assert p.unread() == 0 and p.data == b""
    expected = b"".join(frames)
    assert await p.wait_for(len(expected)) == expected
    writer.close()
    await writer.wait_closed()


async def test_close_writes_what_is_buffered(peer: tuple[_Peer, int]) -> None:
    p, port = peer
    _, writer = await _connect(port)
    writer.writelines([b"last ", b"words"])
    writer.close()
    await writer.wait_closed()
    assert await p.wait_for(10) == b"last words"


async def test_a_large_backlog_is_written_at_drain(peer: tuple[_Peer, int]) -> None:
    p, port = peer
    writer = await _connected(p, port)
    big = b"x" * (300 * 1024)
    writer.write(big)
    await writer.drain()  # over the flush threshold: written now, and back-pressure applies
    assert p.unread() > 0 or p.data
    assert await p.wait_for(len(big)) == big
    writer.close()
    await writer.wait_closed()
