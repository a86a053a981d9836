"""POST /register: success, uniqueness (also under concurrency) and strict input validation."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from common.http import SECURITY_HEADERS

Client = TestClient[Any, Any]


def _body(**overrides: Any) -> dict[str, Any]:
    name = f"user_{uuid.uuid4().hex[:10]}"
    body = {
        "username": name,
        "password": "testpass123",
        "email": f"{name}@company.com",
        "organization": f"Org {name}",  # an existing organization name is refused
    }
    return {**body, **overrides}


async def _assert_error(resp: Any, status: int, code: str) -> None:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    data = await resp.json()
    assert data["error"] == code
    assert isinstance(data["message"], str) and data["message"]
    for name, value in SECURITY_HEADERS.items():
        assert resp.headers[name] == value


async def test_register_returns_201_with_the_seed_fields(client: Client) -> None:
    body = _body(username="testuser", email="test@company.com", organization="TestOrg")
    resp = await client.post("/register", json=body)
    assert resp.status == 201
    data = await resp.json()
    assert data["username"] == "testuser"
    assert data["organization"] == "TestOrg"
    assert len(data["user_id"]) == 32
    assert "password" not in data and "password_hash" not in data
    assert resp.headers["Cache-Control"] == "no-store"
    for name, value in SECURITY_HEADERS.items():
        assert resp.headers[name] == value


async def test_duplicate_username_is_409_case_insensitively(client: Client) -> None:
    body = _body()
    assert (await client.post("/register", json=body)).status == 201
    again = _body(username=body["username"].upper())
    await _assert_error(await client.post("/register", json=again), 409, "username_taken")


async def test_duplicate_email_is_409_and_frees_the_username(client: Client) -> None:
    first = _body()
    assert (await client.post("/register", json=first)).status == 201
    clash = _body(email=first["email"].upper())
    await _assert_error(await client.post("/register", json=clash), 409, "email_taken")
    # The failed attempt must not keep its username claimed.
    retry = _body(username=clash["username"])
    assert (await client.post("/register", json=retry)).status == 201


async def test_concurrent_duplicate_registration_creates_exactly_one(client: Client) -> None:
    body = _body()
    responses = await asyncio.gather(*(client.post("/register", json=body) for _ in range(10)))
    statuses = sorted(r.status for r in responses)
    assert statuses == [201] + [409] * 9
    for resp in responses:
        if resp.status == 409:
            assert (await resp.json())["error"] == "username_taken"


async def test_concurrent_same_email_different_names_creates_exactly_one(client: Client) -> None:
    email = f"shared_{uuid.uuid4().hex[:8]}@company.com"
    bodies = [_body(email=email) for _ in range(8)]
    responses = await asyncio.gather(*(client.post("/register", json=b) for b in bodies))
    assert sorted(r.status for r in responses) == [201] + [409] * 7


@pytest.mark.parametrize(
    "password",
    ["short", "", "aaaaaaaaaaaa", "password123", "x" * 1025],
    ids=["too-short", "empty", "one-char", "common", "too-long"],
)
async def test_weak_passwords_are_400(client: Client, password: str) -> None:
    await _assert_error(await client.post("/register", json=_body(password=password)), 400, "weak_password")


async def test_password_equal_to_username_is_weak(client: Client) -> None:
    body = _body(username="samename_user", password="SameName_User")
    await _assert_error(await client.post("/register", json=body), 400, "weak_password")


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("username", "ab", "invalid_username"),
        ("username", "has space", "invalid_username"),
        ("username", "x" * 65, "invalid_username"),
        ("username", "מנהל", "invalid_username"),
        ("email", "not-an-email", "invalid_email"),
        ("email", "a@b", "invalid_email"),
        ("email", "two@@company.com", "invalid_email"),
        ("email", "spa ce@company.com", "invalid_email"),
        ("organization", "", "invalid_organization"),
        ("organization", "   ", "invalid_organization"),
        ("organization", "x" * 129, "invalid_organization"),
        ("organization", "bad\x00org", "invalid_organization"),
    ],
)
async def test_invalid_fields_are_400(client: Client, field: str, value: str, code: str) -> None:
    await _assert_error(await client.post("/register", json=_body(**{field: value})), 400, code)


async def test_unicode_organization_and_idn_email_are_accepted(client: Client) -> None:
    body = _body(organization="חברה בע״מ 🚀", email="dana@דוגמה.co.il")
    resp = await client.post("/register", json=body)
    assert resp.status == 201, await resp.text()
    data = await resp.json()
    assert data["organization"] == "חברה בע״מ 🚀"
    assert data["email"] == "dana@" + "דוגמה".encode("idna").decode() + ".co.il"


@pytest.mark.parametrize(
    "payload",
    [
        {"username": "u_extra", "password": "testpass123", "email": "e@x.com", "organization": "o", "x": 1},
        {"username": "u_missing", "password": "testpass123", "organization": "o"},
        {"username": 123, "password": "testpass123", "email": "e@x.com", "organization": "o"},
        ["not", "an", "object"],
    ],
    ids=["unknown-field", "missing-field", "wrong-type", "array"],
)
async def test_wrong_shapes_are_400_invalid_request(client: Client, payload: Any) -> None:
    await _assert_error(await client.post("/register", json=payload), 400, "invalid_request")


@pytest.mark.parametrize("raw", [b"{not json", b"", b'{"username": "a"', b"\xff\xfe"])
async def test_malformed_json_is_400(client: Client, raw: bytes) -> None:
    resp = await client.post("/register", data=raw, headers={"Content-Type": "application/json"})
    await _assert_error(resp, 400, "malformed_json")


async def test_form_content_type_is_415(client: Client) -> None:
    resp = await client.post("/register", data={"username": "x"})
    await _assert_error(resp, 415, "unsupported_media_type")


async def test_oversized_body_is_413_json(client: Client) -> None:
    body = _body(organization="x" * (70 * 1024))
    await _assert_error(await client.post("/register", json=body), 413, "body_too_large")


async def test_unknown_route_and_method_are_json_errors(client: Client) -> None:
    await _assert_error(await client.get("/nope"), 404, "not_found")
    resp = await client.get("/register")
    await _assert_error(resp, 405, "method_not_allowed")
    assert "POST" in resp.headers["Allow"]
