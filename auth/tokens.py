"""Access tokens: EdDSA (Ed25519) JWTs with a ``kid`` header, verification and the JWKS document.

Header: ``{"alg": "EdDSA", "typ": "JWT", "kid": <RFC 7638 JWK thumbprint of the public key>}``.
Claims (see :class:`AccessClaims`): ``iss``, ``aud``, ``sub`` (the user id), ``org``, ``role``,
``username``, ``jti``, ``iat``, ``nbf``, ``exp``, ``sid`` (the refresh-token family the token
was issued under, so logout can end that login) and ``gen`` (the user's token generation at issue
time, so ``/logout/all``, a password change or a disable can end every token of the user; see
common/revocation.py). Tokens without ``sid``/``gen`` (older ones) read as ``""``/``0``.

Verifiers (the gateway) fetch ``/.well-known/jwks.json`` or are given the public key; the JWKS
lists the current key and any previous public keys still trusted during a key rotation.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import time
from collections.abc import Sequence
from typing import Any

import jwt
import msgspec
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from auth.settings import AuthSettings
from common.settings import SettingsError

__all__ = [
    "ALGORITHM",
    "AccessClaims",
    "TokenError",
    "TokenService",
    "build_token_service",
    "key_id",
    "load_private_key",
    "load_public_keys",
    "new_claims",
    "public_jwk",
    "sign",
]

ALGORITHM = "EdDSA"
REQUIRED_CLAIMS = ("iss", "aud", "sub", "org", "role", "username", "jti", "iat", "nbf", "exp")
MAX_TOKEN_LENGTH = 4096
_PEM_BLOCK = re.compile(r"-----BEGIN [A-Z ]+-----.+?-----END [A-Z ]+-----", re.DOTALL)

log = structlog.get_logger(__name__)


class AccessClaims(msgspec.Struct, frozen=True, kw_only=True):
    """The claims of an access token, exactly as signed."""

    iss: str
    aud: str
    sub: str
    org: str
    role: str
    username: str
    jti: str
    iat: int
    nbf: int
    exp: int
    sid: str = ""
    gen: int = 0


def new_claims(
    *,
    issuer: str,
    audience: str,
    user_id: str,
    username: str,
    organization: str,
    role: str,
    ttl: int,
    session_id: str = "",
    generation: int = 0,
) -> AccessClaims:
    """The claims of a fresh access token valid from now for ``ttl`` seconds."""
    now = int(time.time())
    return AccessClaims(
        iss=issuer,
        aud=audience,
        sub=user_id,
        org=organization,
        role=role,
        username=username,
        jti=secrets.token_urlsafe(16),
        iat=now,
        nbf=now,
        exp=now + ttl,
        sid=session_id,
        gen=generation,
    )


def sign(claims: AccessClaims, private_key: Ed25519PrivateKey, kid: str) -> str:
    """The compact JWT of ``claims``, signed with ``private_key`` under key id ``kid``."""
    return jwt.encode(msgspec.structs.asdict(claims), private_key, algorithm=ALGORITHM, headers={"kid": kid})


class TokenError(Exception):
    """A token failed verification; ``code`` is the API error code (``invalid_token`` ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _raw_public(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public_key: Ed25519PublicKey) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url): stable, derived from the key alone."""
    canonical = json.dumps(
        {"crv": "Ed25519", "kty": "OKP", "x": _b64url(_raw_public(public_key))},
        separators=(",", ":"),
        sort_keys=True,
    )
    return _b64url(hashlib.sha256(canonical.encode("ascii")).digest())


def public_jwk(public_key: Ed25519PublicKey) -> dict[str, str]:
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": _b64url(_raw_public(public_key)),
        "kid": key_id(public_key),
        "alg": ALGORITHM,
        "use": "sig",
    }


def load_private_key(pem: str) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem.encode("utf-8"), password=None)
    except (ValueError, TypeError) as exc:
        raise SettingsError(f"the signing key is not a readable unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SettingsError("the signing key must be an Ed25519 key (openssl genpkey -algorithm ed25519)")
    return key


def load_public_keys(pem: str) -> list[Ed25519PublicKey]:
    """Every Ed25519 public key in ``pem`` (one or more concatenated PEM blocks)."""
    keys: list[Ed25519PublicKey] = []
    for block in _PEM_BLOCK.findall(pem):
        try:
            key = serialization.load_pem_public_key(block.encode("utf-8"))
        except ValueError as exc:
            raise SettingsError(f"previous public keys: unreadable PEM block: {exc}") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise SettingsError("previous public keys must be Ed25519 keys")
        keys.append(key)
    if not keys:
        raise SettingsError("previous public keys file holds no PEM public key")
    return keys


class TokenService:
    """Signs access tokens with the current key; verifies with the current and previous keys."""

    def __init__(
        self,
        private_key: Ed25519PrivateKey,
        *,
        issuer: str,
        audience: str,
        ttl: int,
        leeway: int,
        previous_public_keys: Sequence[Ed25519PublicKey] = (),
    ) -> None:
        self._private_key = private_key
        self.issuer = issuer
        self.audience = audience
        self.ttl = ttl
        self.leeway = leeway
        public = private_key.public_key()
        self.kid = key_id(public)
        self._verify_keys: dict[str, Ed25519PublicKey] = {self.kid: public}
        for key in previous_public_keys:
            self._verify_keys.setdefault(key_id(key), key)
        self._jwks = {"keys": [public_jwk(key) for key in self._verify_keys.values()]}

    def jwks(self) -> dict[str, Any]:
        """The JWKS document: the current public key first, then previous ones."""
        return self._jwks

    def issue(
        self,
        *,
        user_id: str,
        username: str,
        organization: str,
        role: str,
        session_id: str,
        generation: int = 0,
    ) -> tuple[str, AccessClaims]:
        """Sign a new access token; returns the compact JWT and its claims."""
        claims = new_claims(
            issuer=self.issuer,
            audience=self.audience,
            user_id=user_id,
            username=username,
            organization=organization,
            role=role,
            ttl=self.ttl,
            session_id=session_id,
            generation=generation,
        )
        return sign(claims, self._private_key, self.kid), claims

    def verify(self, token: str) -> AccessClaims:
        """Verify signature, algorithm, issuer, audience and times; raise :class:`TokenError`."""
        if len(token) > MAX_TOKEN_LENGTH:
            raise TokenError("invalid_token", "token is too long")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise TokenError("invalid_token", "token is malformed") from None
        kid = header.get("kid")
        key = self._verify_keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise TokenError("invalid_token", "token is signed with an unknown key")
        try:
            payload = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": list(REQUIRED_CLAIMS)},
            )
        except jwt.ExpiredSignatureError:
            raise TokenError("token_expired", "token has expired") from None
        except jwt.InvalidTokenError:
            raise TokenError("invalid_token", "token is invalid") from None
        try:
            return msgspec.convert(payload, AccessClaims)
        except msgspec.ValidationError:
            raise TokenError("invalid_token", "token claims are malformed") from None


def build_token_service(settings: AuthSettings) -> TokenService:
    """The service's token signer from settings; an ephemeral key only outside production."""
    if settings.signing_key_pem is not None:
        private_key = load_private_key(settings.signing_key_pem)
    elif settings.common.environment == "production":
        raise SettingsError("a signing key is required in production")
    else:
        private_key = Ed25519PrivateKey.generate()
        log.warning(
            "ephemeral_signing_key",
            detail="no AUTH_SIGNING_KEY_FILE set: tokens die with this process and other instances "
            "cannot verify them; set a key outside development",
        )
    previous = (
        load_public_keys(settings.previous_public_keys_pem) if settings.previous_public_keys_pem else []
    )
    return TokenService(
        private_key,
        issuer=settings.issuer,
        audience=settings.audience,
        ttl=settings.access_token_ttl,
        leeway=settings.token_leeway,
        previous_public_keys=previous,
    )
