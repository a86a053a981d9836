"""Admission refuses revoked logins (``sid``) and user-wide revocations (token generation) on every
gateway at once, in the per-request Redis script, for checked and rate-limited routes alike."""

from __future__ import annotations

import time
from typing import Any

import jwt
import msgspec
from helpers import AUDIENCE, ISSUER, KeyPair, auth_header

from auth.tokens import new_claims
from common.keyspace import Keyspace
from common.revocation import TokenRevocation


def _revocation(redis: Any, namespace: str) -> TokenRevocation:
    return TokenRevocation(redis, Keyspace(f"{namespace}:"), login_ttl=905)


async def _status(gateway: Any, token: str, chat: bool = False) -> tuple[int, str | None]:
    if chat:
        body = {"session_id": "s1", "prompt": "hi", "stream": False}
        resp = await gateway.post("/chat", json=body, headers=auth_header(token))
    else:
        resp = await gateway.get("/sessions", headers=auth_header(token))
    error = (await resp.json()).get("error") if resp.status != 200 else None
    return resp.status, error


async def test_a_revoked_login_is_refused_on_every_gateway(
    gateway_factory: Any, worker: Any, keys: KeyPair, redis: Any, namespace: str
) -> None:
    gateways = [await gateway_factory(), await gateway_factory()]
    older, newer = keys.mint("u-sid", sid="login-a"), keys.mint("u-sid", sid="login-a")
    other_login = keys.mint("u-sid", sid="login-b")
    for gateway in gateways:  # verified (and cached) everywhere first
        for token in (older, newer, other_login):
            assert await _status(gateway, token) == (200, None)

    await _revocation(redis, namespace).revoke_login("u-sid", "login-a")
    for gateway in gateways:
        for token in (older, newer):
            assert await _status(gateway, token) == (401, "token_revoked")
            assert await _status(gateway, token, chat=True) == (401, "token_revoked")
        assert await _status(gateway, other_login) == (200, None)
    assert await _status(gateways[0], other_login, chat=True) == (200, None)


async def test_user_wide_revocation_refuses_every_older_token(
    gateway: Any, worker: Any, keys: KeyPair, redis: Any, namespace: str
) -> None:
    now = int(time.time())
    claims = msgspec.structs.asdict(
        new_claims(
            issuer=ISSUER,
            audience=AUDIENCE,
            user_id="u-all",
            username="u",
            organization="o",
            role="user",
            ttl=300,
        )
    )
    del claims["gen"], claims["sid"]  # a token from before generations existed reads as generation 0
    legacy = jwt.encode(claims, keys.private, algorithm="EdDSA", headers={"kid": keys.kid})
    current = keys.mint("u-all", sid="login-a")
    bystander = keys.mint("someone-else")
    for token in (legacy, current, bystander):
        assert await _status(gateway, token) == (200, None)

    assert await _revocation(redis, namespace).revoke_user("u-all") == 1
    for token in (legacy, current):
        assert await _status(gateway, token) == (401, "token_revoked")
        assert await _status(gateway, token, chat=True) == (401, "token_revoked")
    assert await _status(gateway, bystander) == (200, None)
    # Tokens issued after the revocation carry the new generation (same second: still honoured).
    fresh = keys.mint("u-all", sid="login-c", gen=1, iat=now, nbf=now)
    assert await _status(gateway, fresh) == (200, None)
    assert await _status(gateway, fresh, chat=True) == (200, None)


async def test_disabled_is_answered_before_revoked(
    gateway: Any, keys: KeyPair, redis: Any, namespace: str
) -> None:
    token = keys.mint("u-dis", sid="login-a")
    revocation = _revocation(redis, namespace)
    await revocation.revoke_user("u-dis")
    await redis.set(Keyspace(f"{namespace}:").disabled_user("u-dis"), "1")
    assert await _status(gateway, token) == (403, "user_disabled")


async def test_malformed_sid_or_gen_claims_are_invalid_tokens(gateway: Any, keys: KeyPair) -> None:
    for overrides in ({"gen": "1"}, {"gen": True}, {"gen": 1.5}, {"sid": 7}):
        token = keys.mint("u-bad", **overrides)
        assert await _status(gateway, token) == (401, "invalid_token"), overrides
