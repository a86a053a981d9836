"""The whole request path through HAProxy: simulator -> worker -> 3 gateways (+ auth) -> HAProxy."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer
from deploy_support import Stack, StackFactory, Tls, address, client_tls
from helpers import KeyPair, SseEvent, auth_header, iter_sse, read_sse, text_of

from inference_worker.simulator import STATE_KEY


def _chat(session_id: str, prompt: str = "Hello, how are you?") -> dict[str, Any]:
    return {"session_id": session_id, "prompt": prompt}


async def _chat_ok(session: aiohttp.ClientSession, url: str, token: str, **kwargs: Any) -> str:
    """One streamed chat; returns its text after checking it ended with ``done``."""
    payload = _chat(f"s-{uuid.uuid4().hex[:8]}")
    async with session.post(f"{url}/chat", json=payload, headers=auth_header(token), **kwargs) as response:
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"].startswith("text/event-stream")
        events = await read_sse(response)
    assert events[-1].event == "done", events
    assert events[-1].data["session_id"] == payload["session_id"]
    text = text_of(events)
    assert text
    return text


async def test_streamed_chat_arrives_incrementally(
    stack: Stack, keys: KeyPair, simulator: TestServer
) -> None:
    state = simulator.app[STATE_KEY]
    # Slow enough that the answer is still being generated when the first token is read.
    state.config = dataclasses.replace(state.config, tokens_per_second=10, answer_tokens=24)
    token = keys.mint(f"u-{uuid.uuid4().hex[:8]}")
    async with aiohttp.ClientSession() as session:
        payload = _chat("incremental", "שלום, מה שלומך?")
        url = f"{stack.haproxy.http_url}/chat"
        async with session.post(url, json=payload, headers=auth_header(token)) as response:
            assert response.status == 200
            events = iter_sse(response)
            first = await anext(events)
            assert first.event == "token"
            # HAProxy passed the first token on while the model was still generating.
            assert state.stats.generations_completed == 0
            rest = [event async for event in events]
    assert rest[-1].event == "done"
    assert [e.data["seq"] for e in [first, *rest] if e.event == "token"] == list(range(len(rest)))


async def test_chat_over_tls_carries_security_headers(stack: Stack, keys: KeyPair, tls: Tls) -> None:
    token = keys.mint(f"u-{uuid.uuid4().hex[:8]}")
    async with aiohttp.ClientSession() as session:
        await _chat_ok(session, stack.haproxy.https_url, token, ssl=client_tls(tls.ca_file))
        url = f"{stack.haproxy.https_url}/sessions"
        async with session.get(url, headers=auth_header(token), ssl=client_tls(tls.ca_file)) as response:
            assert response.status == 200
            assert response.headers["Strict-Transport-Security"].startswith("max-age=")
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert response.headers["X-Frame-Options"] == "DENY"
            assert "Referrer-Policy" in response.headers


async def test_request_id_reaches_the_gateway(stack: Stack, keys: KeyPair) -> None:
    token = keys.mint(f"u-{uuid.uuid4().hex[:8]}")
    url = f"{stack.haproxy.http_url}/sessions"
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers=auth_header(token)) as response:
            assert response.status == 200
            generated = response.headers["X-Request-ID"]
            assert len(generated) == 36 and generated.count("-") == 4  # HAProxy's uuid, adopted
        mine = f"req-{uuid.uuid4().hex}"
        async with session.get(url, headers={**auth_header(token), "X-Request-ID": mine}) as response:
            assert response.status == 200
            assert response.headers["X-Request-ID"] == mine


async def test_chats_keep_succeeding_when_a_gateway_stops(stack: Stack, keys: KeyPair) -> None:
    token = keys.mint(f"u-{uuid.uuid4().hex[:8]}")
    url = stack.haproxy.http_url
    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(_chat_ok(session, url, token) for _ in range(6)))
        await stack.gateways[0].close()
        # Before the health check notices: connection failures are retried on another gateway.
        for _ in range(5):
            await _chat_ok(session, url, token)
        await stack.haproxy.wait_status({"gateways/gateway1": "DOWN", "gateways/gateway2": "UP"})
        results = await asyncio.gather(
            *(_chat_ok(session, url, token) for _ in range(20)), return_exceptions=True
        )
        assert [r for r in results if isinstance(r, BaseException)] == []
        async with session.get(f"{url}/ready") as response:
            assert response.status == 200


async def test_ready_is_down_only_when_every_gateway_is(stack: Stack) -> None:
    url = f"{stack.haproxy.http_url}/ready"
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as response:
            assert response.status == 200
        for gateway in stack.gateways[:2]:
            await gateway.close()
        await stack.haproxy.wait_status({"gateways/gateway1": "DOWN", "gateways/gateway2": "DOWN"})
        async with session.get(url) as response:
            assert response.status == 200
        await stack.gateways[2].close()
        await stack.haproxy.wait_status({"gateways/gateway3": "DOWN"})
        async with session.get(url) as response:
            assert response.status == 503


async def test_auth_paths_reach_the_auth_service(stack: Stack) -> None:
    url = stack.haproxy.http_url
    name = f"user{uuid.uuid4().hex[:8]}"
    account = {
        "username": name,
        "password": "testpass123-long-enough",
        "email": f"{name}@company.com",
        "organization": "TestOrg",
    }
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/register", json=account) as response:
            assert response.status == 201, await response.text()
            assert (await response.json())["username"] == name
        login = {"username": name, "password": account["password"]}
        async with session.post(f"{url}/login", json=login) as response:
            assert response.status == 200, await response.text()
            tokens = await response.json()
        async with session.get(f"{url}/me", headers=auth_header(tokens["access_token"])) as response:
            assert response.status == 200
            assert (await response.json())["username"] == name
        async with session.get(f"{url}/.well-known/jwks.json") as response:
            assert response.status == 200
            assert (await response.json())["keys"]
        # The token from the auth service opens a chat through the same base URL.
        await _chat_ok(session, url, tokens["access_token"])


async def test_personal_api_keys_are_managed_and_used_through_the_front_door(
    stack_factory: StackFactory, auth_server: TestServer
) -> None:
    # What the chat page's API-keys panel calls: list, create, revoke the signed-in user's own keys
    # (auth's /me/api-keys behind HAProxy), and the key used at the gateways through the same door.
    stack = await stack_factory(gateway_env={"AUTH_URL": f"http://{address(auth_server)}"})
    url = stack.haproxy.http_url
    name = f"keys{uuid.uuid4().hex[:8]}"
    account = {
        "username": name,
        "password": "testpass123-long-enough",
        "email": f"{name}@company.com",
        "organization": f"Org {name}",
    }
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/register", json=account) as response:
            assert response.status == 201, await response.text()
        login = {"username": name, "password": account["password"]}
        async with session.post(f"{url}/login", json=login) as response:
            signed_in = auth_header((await response.json())["access_token"])
        async with session.get(f"{url}/me/api-keys", headers=signed_in) as response:
            assert response.status == 200, await response.text()
            assert await response.json() == {"api_keys": []}
        body = {"name": "script", "expires_in": 3600}
        async with session.post(f"{url}/me/api-keys", json=body, headers=signed_in) as response:
            assert response.status == 201, await response.text()
            assert response.headers["Cache-Control"] == "no-store"
            created = await response.json()
        secret = created["api_key"]
        assert secret.startswith(created["prefix"]) and created["scopes"] == ["chat", "models"]
        async with session.get(f"{url}/me/api-keys", headers=signed_in) as response:
            (listed,) = (await response.json())["api_keys"]
        assert listed["key_id"] == created["key_id"] and "api_key" not in listed
        assert secret not in str(listed)

        with_key = auth_header(secret)
        async with session.get(f"{url}/v1/models", headers=with_key) as response:
            assert response.status == 200, await response.text()
        # A key cannot manage keys: that needs a sign-in.
        async with session.get(f"{url}/me/api-keys", headers=with_key) as response:
            assert response.status == 401

        key_path = f"{url}/me/api-keys/{created['key_id']}"
        async with session.delete(key_path, headers=signed_in) as response:
            assert response.status == 204, await response.text()
        for _ in range(3):  # every gateway refuses it (HAProxy spreads the calls)
            async with session.get(f"{url}/v1/models", headers=with_key) as response:
                assert response.status == 401, await response.text()
        async with session.delete(key_path, headers=signed_in) as response:
            assert response.status == 204  # revoking again changes nothing
        async with session.delete(f"{url}/me/api-keys/{'0' * 32}", headers=signed_in) as response:
            assert response.status == 404
            assert (await response.json())["error"] == "api_key_not_found"


async def test_stats_and_metrics_show_the_backends(stack: Stack) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{stack.haproxy.stats_url}/stats") as response:
            assert response.status == 200
            page = await response.text()
            assert "gateway3" in page and "auth1" in page
        async with session.get(f"{stack.haproxy.stats_url}/metrics") as response:
            assert response.status == 200
            metrics = await response.text()
    assert 'haproxy_backend_active_servers{proxy="gateways"} 3' in metrics


async def test_sse_heartbeats_keep_a_slow_first_token_alive(
    stack_factory: StackFactory, keys: KeyPair, simulator: TestServer
) -> None:
    state = simulator.app[STATE_KEY]
    # The first token takes twice HAProxy's inactivity timeouts; heartbeats every 0.5 s bridge it.
    state.config = dataclasses.replace(state.config, ttft_ms=4000)
    stack = await stack_factory({"SSE_HEARTBEAT_SECONDS": "0.5"}, TIMEOUT_SERVER="2s", TIMEOUT_CLIENT="2s")
    async with aiohttp.ClientSession() as session:
        await _chat_ok(session, stack.haproxy.http_url, keys.mint(f"u-{uuid.uuid4().hex[:8]}"))


async def test_without_heartbeats_the_low_timeout_cuts_the_stream(
    stack_factory: StackFactory, keys: KeyPair, simulator: TestServer
) -> None:
    """The control for the test above: the timeout set through the environment is in force."""
    state = simulator.app[STATE_KEY]
    state.config = dataclasses.replace(state.config, ttft_ms=4000)
    stack = await stack_factory({"SSE_HEARTBEAT_SECONDS": "30"}, TIMEOUT_SERVER="2s", TIMEOUT_CLIENT="2s")
    token = keys.mint(f"u-{uuid.uuid4().hex[:8]}")
    url = f"{stack.haproxy.http_url}/chat"
    events: list[SseEvent] = []
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, json=_chat("cut"), headers=auth_header(token)) as response,
    ):
        with contextlib.suppress(aiohttp.ClientPayloadError):  # cut mid-body
            events = await read_sse(response)
    assert response.status == 504 or not any(e.event == "done" for e in events)
