"""Third-party clients through the front door: HAProxy routes Ollama's ``/api/`` and OpenAI's
``/v1/`` to the gateways, and a browser's CORS pre-flight gets through without a token."""

from __future__ import annotations

import uuid

import aiohttp
import ollama
import openai
from deploy_support import StackFactory
from helpers import KeyPair

from inference_worker.simulator_text import expected_answer

ORIGIN = "https://chat.example.com"


async def test_ollama_and_openai_clients_through_haproxy(stack_factory: StackFactory, keys: KeyPair) -> None:
    stack = await stack_factory(gateway_env={"CORS_ALLOWED_ORIGINS": ORIGIN})
    url = stack.haproxy.http_url
    token = keys.mint(f"u-{uuid.uuid4().hex[:8]}")
    client = ollama.AsyncClient(host=url, headers={"Authorization": f"Bearer {token}"})
    try:
        assert "llama3.2:latest" in [m.model for m in (await client.list()).models]
        messages = [{"role": "user", "content": "through the front door"}]
        parts = [p async for p in await client.chat(model="llama3.2", messages=messages, stream=True)]
        assert "".join(p.message.content or "" for p in parts) == expected_answer("llama3.2", messages, 24)
        assert len((await client.embed(model="llama3.2", input=["a", "b"])).embeddings) == 2
    finally:
        await client.close()
    async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=token, max_retries=0) as oa:
        assert (await oa.models.retrieve("llama3.2")).id == "llama3.2"
    async with aiohttp.ClientSession() as session:
        preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
        async with session.options(f"{url}/v1/chat/completions", headers=preflight) as response:
            assert response.status == 204
            assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
