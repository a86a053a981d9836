"""Tenant isolation of sessions, input sanitising, and security headers on every response."""

from __future__ import annotations

from typing import Any

from helpers import KeyPair, auth_header, read_sse

SECURITY = {
    "Strict-Transport-Security",
    "X-Content-Type-Options",
    "X-Frame-Options",
    "Referrer-Policy",
    "Content-Security-Policy",
}


async def test_other_users_session_is_404_and_leaks_nothing(gateway: Any, worker: Any, keys: KeyPair) -> None:
    alice, bob = keys.mint("alice"), keys.mint("bob")
    secret = "my salary is 12345"
    chat = await gateway.post(
        "/chat", json={"session_id": "private", "prompt": secret, "stream": False}, headers=auth_header(alice)
    )
    assert chat.status == 200
    own = await gateway.get("/sessions/private", headers=auth_header(alice))
    assert own.status == 200
    assert [t["role"] for t in (await own.json())["turns"]] == ["user", "assistant"]

    other = await gateway.get("/sessions/private", headers=auth_header(bob))
    assert other.status == 404
    body = await other.text()
    assert secret not in body
    assert (await other.json())["error"] == "session_not_found"
    listing = await (await gateway.get("/sessions", headers=auth_header(bob))).json()
    assert listing == {"sessions": [], "next": None}

    # Bob using the same session id starts fresh: Alice's turns never reach the model.
    reply = await gateway.post(
        "/chat",
        json={"session_id": "private", "prompt": "what did I say?", "stream": False},
        headers=auth_header(bob),
    )
    assert (await reply.json())["response"].startswith(" [turns=0]")


async def test_sessions_listing_is_paginated(gateway: Any, worker: Any, keys: KeyPair) -> None:
    token = keys.mint("pager")
    for i in range(3):
        await gateway.post(
            "/chat",
            json={"session_id": f"p{i}", "prompt": f"q{i}", "stream": False},
            headers=auth_header(token),
        )
    first = await (await gateway.get("/sessions?limit=2", headers=auth_header(token))).json()
    assert [s["session_id"] for s in first["sessions"]] == ["p2", "p1"]
    assert first["sessions"][0]["turns"] == 2
    second = await (
        await gateway.get(f"/sessions?limit=2&cursor={first['next']}", headers=auth_header(token))
    ).json()
    assert [s["session_id"] for s in second["sessions"]] == ["p0"]
    assert second["next"] is None
    bad = await gateway.get("/sessions?limit=abc", headers=auth_header(token))
    assert bad.status == 400


async def test_control_characters_are_stripped_and_unicode_kept(
    gateway: Any, worker: Any, keys: KeyPair
) -> None:
    token = keys.mint("uni")
    prompt = "שלום\x00 עולם\x07 👋🏽\r\nline\ttab\x1b[31m"
    response = await gateway.post(
        "/chat", json={"session_id": "u", "prompt": prompt, "stream": False}, headers=auth_header(token)
    )
    assert response.status == 200
    session = await (await gateway.get("/sessions/u", headers=auth_header(token))).json()
    assert session["turns"][0]["content"] == "שלום עולם 👋🏽\r\nline\ttab[31m"


async def test_security_headers_on_stream_json_and_errors(gateway: Any, worker: Any, keys: KeyPair) -> None:
    token = keys.mint("h")
    stream = await gateway.post("/chat", json={"session_id": "h", "prompt": "hi"}, headers=auth_header(token))
    await read_sse(stream)
    json_ok = await gateway.get("/sessions", headers=auth_header(token))
    unauthorized = await gateway.get("/sessions")
    not_found = await gateway.get("/nowhere", headers=auth_header(token))
    bad = await gateway.post("/chat", data=b"{", headers=auth_header(token))
    for response in (stream, json_ok, unauthorized, not_found, bad):
        assert set(response.headers) >= SECURITY, response.url
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert "X-Request-ID" in response.headers


async def test_incoming_request_id_is_a_trace_id_only(gateway: Any, worker: Any, keys: KeyPair) -> None:
    """The caller's X-Request-ID is echoed back; the id that routes the chat is the server's own."""
    response = await gateway.post(
        "/chat",
        json={"session_id": "r", "prompt": "hi", "stream": False},
        headers={**auth_header(keys.mint("r")), "X-Request-ID": "req-from-haproxy-0001"},
    )
    assert response.headers["X-Request-ID"] == "req-from-haproxy-0001"
    server_id = (await response.json())["request_id"]
    assert server_id != "req-from-haproxy-0001"
    assert len(server_id) == 32 and int(server_id, 16) >= 0  # 128 random bits, hex
    plain = await gateway.post(
        "/chat",
        json={"session_id": "r2", "prompt": "hi", "stream": False},
        headers=auth_header(keys.mint("r")),
    )
    # Without a trace id of its own, the caller's trace id is the request id.
    assert plain.headers["X-Request-ID"] == (await plain.json())["request_id"]
