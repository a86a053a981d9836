"""API-key verification for the gateway: a key seen in the last ``API_KEY_CACHE_TTL`` seconds is
served from memory, with no PostgreSQL or auth-service round trip.

A key not in the cache (or whose entry is older than the TTL) is verified once at the auth
service's ``/internal/api-keys/verify``; concurrent requests with the same key share that one
call. Revocation reaches every gateway at once through Redis: a revoked key's ``revoked_jti``
mark (jti ``key:<id>``) is read by the admission script on every request (auth/api_keys.py).
Expiry is checked here, with the gateway's clock, on every request.

When the auth service cannot answer (it, or PostgreSQL behind it, is down), a key verified
before keeps working for one more TTL (its revocation mark still outlives that); an unknown key
gets 503 ``unavailable``, not 401: the key may well be valid.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass

import aiohttp
import msgspec
import structlog

from gateway.tokens import InvalidToken, Principal

__all__ = ["API_KEY_PREFIX", "ApiKeyVerifier", "AuthUnavailable"]

log = structlog.get_logger(__name__)

API_KEY_PREFIX = "ekey_"
INTERNAL_TOKEN_HEADER = "X-Internal-Token"
# A key's requests skip the user's token-generation check (logout/all and password changes end
# logins, not keys): common/revocation.py reads a negative generation as "not checked".
KEY_GENERATION = -1


class AuthUnavailable(Exception):
    """The auth service could not verify a key now: answered 503 with Retry-After."""


class _Verified(msgspec.Struct):
    key_id: str
    user_id: str
    organization_id: str
    username: str
    role: str
    scopes: list[str]
    expires_at: float | None


@dataclass(slots=True)
class _Entry:
    principal: Principal
    fetched_at: float


class ApiKeyVerifier:
    def __init__(
        self,
        http: aiohttp.ClientSession,
        verify_url: str,
        *,
        ttl: float,
        internal_token: str = "",
        cache_size: int = 10_000,
        timeout: float = 3.0,
    ) -> None:
        self._http = http
        self._url = verify_url
        self._ttl = ttl
        self._headers = {INTERNAL_TOKEN_HEADER: internal_token} if internal_token else {}
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._cache_size = cache_size
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._in_flight: dict[str, asyncio.Future[Principal]] = {}
        self._decoder = msgspec.json.Decoder(_Verified)

    async def verify(self, key: str) -> Principal:
        now = time.time()
        entry = self._cache.get(key)
        if entry is not None:
            if entry.principal.expires_at <= now:
                del self._cache[key]
                raise InvalidToken("invalid_api_key", "the API key has expired")
            if now - entry.fetched_at < self._ttl:
                self._cache.move_to_end(key)
                return entry.principal
        pending = self._in_flight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Principal] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = future
        try:
            principal = await self._fetch(key, entry)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody else waits
            raise
        else:
            future.set_result(principal)
            return principal
        finally:
            del self._in_flight[key]

    async def _fetch(self, key: str, stale: _Entry | None) -> Principal:
        try:
            async with self._http.post(
                self._url, json={"api_key": key}, headers=self._headers, timeout=self._timeout
            ) as resp:
                if resp.status == 401:
                    self._cache.pop(key, None)
                    raise InvalidToken("invalid_api_key", "the API key is unknown, revoked or expired")
                if resp.status != 200:
                    raise AuthUnavailable(f"auth answered {resp.status}")
                verified = self._decoder.decode(await resp.read())
        except (aiohttp.ClientError, TimeoutError, msgspec.DecodeError, AuthUnavailable) as exc:
            if stale is not None and time.time() - stale.fetched_at < 2 * self._ttl:
                log.warning("api_key_verify_failed_serving_cached", error=str(exc))
                return stale.principal
            log.warning("api_key_verify_failed", error=str(exc))
            raise AuthUnavailable(str(exc)) from exc
        principal = Principal(
            user_id=verified.user_id,
            org_id=verified.organization_id,
            role=verified.role,
            username=verified.username,
            jti=f"key:{verified.key_id}",
            expires_at=verified.expires_at if verified.expires_at is not None else float("inf"),
            generation=KEY_GENERATION,
            key_id=verified.key_id,
            scopes=frozenset(verified.scopes),
        )
        self._cache[key] = _Entry(principal, time.time())
        self._cache.move_to_end(key)
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return principal
