"""A TCP forwarder a test (or the fault suite) controls, to take a dependency away.

Point a service at :attr:`TcpProxy.address` instead of RabbitMQ, Redis or S3; :meth:`TcpProxy.cut`
then behaves like the dependency going down (open connections are reset, new ones refused) for
that service alone, without touching the shared server other tests use; :meth:`TcpProxy.restore`
brings it back on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from urllib.parse import urlparse, urlunparse

__all__ = ["TcpProxy", "target_of", "via"]


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._port = 0
        self._links: set[asyncio.Task[None]] = set()
        self._transports: set[asyncio.WriteTransport] = set()
        self.connections = 0  # accepted since start: shows a client came back
        self._answers = asyncio.Event()  # cleared: what the target sends is held back
        self._answers.set()

    @property
    def port(self) -> int:
        return self._port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self._port}"

    @property
    def up(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        """Listen (on a free port the first time, on the same port after a cut)."""
        self._server = await asyncio.start_server(
            self._accept, "127.0.0.1", self._port, reuse_address=True, family=socket.AF_INET
        )
        self._port = int(self._server.sockets[0].getsockname()[1])

    async def cut(self) -> None:
        """Stop listening and reset every open connection, both sides."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for transport in list(self._transports):
            transport.abort()
        self._transports.clear()
        for task in list(self._links):
            task.cancel()
        await asyncio.gather(*self._links, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def restore(self) -> None:
        await self.start()

    def retarget(self, host: str, port: int) -> None:
        """Connections accepted from now on go to ``host:port`` (another gateway, say)."""
        self._target = (host, port)

    def hold_answers(self, held: bool = True) -> None:
        """Hold back what the target sends (a broker's confirms, say) while the client's bytes
        still reach it; ``False`` lets it through again."""
        if held:
            self._answers.clear()
        else:
            self._answers.set()

    async def close(self) -> None:
        await self.cut()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        for side in (writer, upstream_writer):
            self._transports.add(side.transport)
        pumps = [
            asyncio.ensure_future(_pump(reader, upstream_writer)),
            asyncio.ensure_future(_pump(upstream_reader, writer, self._answers)),
        ]
        for pump in pumps:
            self._links.add(pump)
            pump.add_done_callback(self._links.discard)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for side in (writer, upstream_writer):
                self._transports.discard(side.transport)
                side.transport.abort()
            for pump in pumps:
                pump.cancel()


async def _pump(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, gate: asyncio.Event | None = None
) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while data := await reader.read(65536):
            if gate is not None:
                await gate.wait()
            writer.write(data)
            await writer.drain()


def via(url: str, proxy: TcpProxy) -> str:
    """``url`` (amqp://, redis:// ...) with its host and port replaced by the proxy's."""
    parsed = urlparse(url)
    credentials = parsed.netloc.rpartition("@")[0]
    netloc = f"{credentials}@{proxy.address}" if credentials else proxy.address
    return urlunparse(parsed._replace(netloc=netloc))


def target_of(url: str, default_port: int) -> tuple[str, int]:
    """Host and port a URL points at."""
    parsed = urlparse(url)
    return parsed.hostname or "127.0.0.1", parsed.port or default_port
