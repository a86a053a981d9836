"""Access-token verification with the auth service's public keys; no call to auth per request.

Keys come from settings (PEM) and/or the auth service's JWKS, fetched once, cached, and fetched
again (rate-limited) when a token names an unknown ``kid``. A bearer credential that is an API key
(``ekey_...``) goes to gateway/api_keys.py instead: the gateway takes either wherever it takes one.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
import jwt
import structlog
from jwt.algorithms import get_default_algorithms

if TYPE_CHECKING:
    from gateway.api_keys import ApiKeyVerifier

log = structlog.get_logger(__name__)

# What an API key's scope must include for a route: listing models needs ``models``, all else
# (generations, jobs, sessions) ``chat``.
MODEL_PATHS = frozenset({"/v1/models", "/api/tags", "/models"})


def required_scope(path: str) -> str:
    return "models" if path in MODEL_PATHS else "chat"


class InvalidToken(Exception):
    """The token is not acceptable; ``code`` is the machine-readable reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, from a verified token.

    ``session_id`` (claim ``sid``: the login, i.e. its refresh-token family), ``generation``
    (claim ``gen``) and ``issued_at`` are what revocation checks against (common/revocation.py).
    """

    user_id: str
    org_id: str
    role: str
    username: str
    jti: str
    expires_at: float
    session_id: str = ""
    generation: int = 0
    issued_at: float = 0.0
    # API keys only: the key's id (usage is recorded per key) and scopes; a JWT has every scope.
    key_id: str = ""
    scopes: frozenset[str] | None = None

    def allows(self, scope: str) -> bool:
        return self.scopes is None or scope in self.scopes


class TokenVerifier:
    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        algorithms: tuple[str, ...],
        static_keys: tuple[str, ...] = (),
        jwks_url: str | None = None,
        http: aiohttp.ClientSession | None = None,
        leeway: float = 5.0,
        jwks_min_refresh: float = 30.0,
        cache_size: int = 10_000,
        api_keys: ApiKeyVerifier | None = None,
    ) -> None:
        self._api_keys = api_keys
        self._issuer = issuer
        self._audience = audience
        self._algorithms = list(algorithms)
        self._leeway = leeway
        self._jwks_url = jwks_url
        self._http = http
        self._jwks_min_refresh = jwks_min_refresh
        self._static: list[jwt.PyJWK] = [jwt.PyJWK.from_dict(_pem_to_jwk(pem)) for pem in static_keys]
        self._by_kid: dict[str, jwt.PyJWK] = {}
        self._jwks_fetched_at = 0.0
        self._jwks_lock = asyncio.Lock()
        self._cache: OrderedDict[str, Principal] = OrderedDict()
        self._cache_size = cache_size

    async def verify(self, token: str) -> Principal:
        """Verify a token; a token verified before is served from a bounded cache until it expires.

        The cache only skips repeating the signature check of the exact same token string;
        revocation and the disabled flag are still checked per request (in Redis, by admission).
        An API key is verified by gateway/api_keys.py (its own cache).
        """
        if self._api_keys is not None and token.startswith("ekey_"):
            return await self._api_keys.verify(token)
        cached = self._cache.get(token)
        if cached is not None:
            if cached.expires_at + self._leeway > time.time():
                self._cache.move_to_end(token)
                return cached
            del self._cache[token]
        principal = await self._verify(token)
        self._cache[token] = principal
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return principal

    async def _verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise InvalidToken("invalid_token", "the token is malformed") from exc
        alg = header.get("alg")
        if alg not in self._algorithms:
            raise InvalidToken("invalid_token", "the token's algorithm is not accepted")
        kid = header.get("kid")
        keys = await self._keys_for(kid if isinstance(kid, str) else None)
        if not keys:
            raise InvalidToken("invalid_token", "the token's signing key is unknown")
        last: jwt.InvalidTokenError | None = None
        keys = [k for k in keys if k.algorithm_name == alg]
        if not keys:
            raise InvalidToken("invalid_token", "the token's algorithm does not match its key")
        for key in keys:
            try:
                claims: dict[str, Any] = jwt.decode(
                    token,
                    key=key,
                    algorithms=[alg],
                    audience=self._audience,
                    issuer=self._issuer,
                    leeway=self._leeway,
                    options={"require": ["exp", "iat", "sub", "iss", "aud", "jti"]},
                )
                break
            except jwt.ExpiredSignatureError as exc:
                raise InvalidToken("token_expired", "the token has expired") from exc
            except jwt.ImmatureSignatureError as exc:
                raise InvalidToken("token_not_yet_valid", "the token is not valid yet") from exc
            except jwt.InvalidTokenError as exc:
                last = exc
        else:
            raise InvalidToken("invalid_token", f"the token is not acceptable: {last}")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise InvalidToken("invalid_token", "the token has no subject")
        sid = claims.get("sid", "")
        generation = claims.get("gen", 0)
        # bool is an int in Python; a signed but malformed claim must not pass as generation 0/1.
        if not isinstance(sid, str) or not isinstance(generation, int) or isinstance(generation, bool):
            raise InvalidToken("invalid_token", "the token's sid or gen claim is malformed")
        return Principal(
            user_id=sub,
            org_id=str(claims.get("org", "")),
            role=str(claims.get("role", "user")),
            username=str(claims.get("username", "")),
            jti=str(claims["jti"]),
            expires_at=float(claims["exp"]),
            session_id=sid,
            generation=generation,
            issued_at=float(claims["iat"]),
        )

    async def _keys_for(self, kid: str | None) -> list[jwt.PyJWK]:
        if kid is not None and kid in self._by_kid:
            return [self._by_kid[kid]]
        if self._jwks_url is not None and self._http is not None:
            await self._refresh_jwks()
            if kid is not None and kid in self._by_kid:
                return [self._by_kid[kid]]
            if kid is None:
                return [*self._static, *self._by_kid.values()]
        return list(self._static)

    async def _refresh_jwks(self, *, force: bool = False) -> None:
        async with self._jwks_lock:
            if not force and time.monotonic() - self._jwks_fetched_at < self._jwks_min_refresh:
                return
            self._jwks_fetched_at = time.monotonic()
            assert self._jwks_url is not None and self._http is not None
            try:
                async with self._http.get(self._jwks_url, timeout=aiohttp.ClientTimeout(total=5)) as resp:
                    if resp.status != 200:
                        log.warning("jwks_fetch_failed", status=resp.status)
                        return
                    payload = await resp.json()
                jwk_set = jwt.PyJWKSet.from_dict(payload)
            except (aiohttp.ClientError, TimeoutError, ValueError, jwt.PyJWKSetError) as exc:
                log.warning("jwks_fetch_failed", error=str(exc))
                return
            self._by_kid = {k.key_id: k for k in jwk_set.keys if k.key_id}
            log.info("jwks_loaded", kids=sorted(self._by_kid))


def _pem_to_jwk(pem: str) -> dict[str, Any]:
    """Convert a public PEM to a JWK dict, picking the algorithm family from the key type."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    key = load_pem_public_key(pem.encode())
    algorithms = get_default_algorithms()
    if isinstance(key, ed25519.Ed25519PublicKey):
        alg = "EdDSA"
    elif isinstance(key, rsa.RSAPublicKey):
        alg = "RS256"
    elif isinstance(key, ec.EllipticCurvePublicKey):
        alg = "ES256"
    else:
        raise ValueError("unsupported public key type")
    jwk: dict[str, Any] = algorithms[alg].to_jwk(key, as_dict=True)
    jwk["alg"] = alg
    return jwk
