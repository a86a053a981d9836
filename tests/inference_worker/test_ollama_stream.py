"""Reading Ollama's NDJSON stream: lines split across network chunks, and a node that misbehaves."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import web
from helpers import start_server

from inference_worker.ollama import MAX_LINE_BYTES, NodeFailed, OllamaClient, OllamaNode


@asynccontextmanager
async def _node(body: Callable[[web.StreamResponse], Awaitable[None]]) -> AsyncIterator[str]:
    """A stand-in model node whose ``/api/chat`` writes what ``body`` writes."""

    async def chat(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        await body(response)
        return response

    app = web.Application()
    app.router.add_post("/api/chat", chat)
    server = await start_server(app)
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


async def _read(url: str) -> list[str]:
    async with aiohttp.ClientSession() as session:
        client = OllamaClient(session, read_timeout=5)
        async with client.chat(OllamaNode(url), "m", [{"role": "user", "content": "hi"}]) as lines:
            return [line.message.content if line.message else "" async for line in lines]


async def test_lines_split_across_chunks_are_joined() -> None:
    async def body(response: web.StreamResponse) -> None:
        await response.write(b'{"message":{"content":"He"},"done":false}\n{"message":{"con')
        await response.write(b'tent":"llo"},"done":false}\n')
        await response.write(b'{"message":{"content":""},"done":true,"done_reason":"stop"}\n')

    async with _node(body) as url:
        assert await _read(url) == ["He", "llo", ""]


async def test_a_line_that_never_ends_is_a_failed_node() -> None:
    async def body(response: web.StreamResponse) -> None:
        await response.write(b'{"message":{"content":"')
        chunk = b"x" * 65536
        for _ in range(MAX_LINE_BYTES // len(chunk) + 2):
            await response.write(chunk)

    async with _node(body) as url:
        with pytest.raises(NodeFailed, match="line over"):
            await _read(url)
