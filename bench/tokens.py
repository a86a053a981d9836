"""Access tokens for the bench users: a fresh Ed25519 key pair per run, minted like the auth service."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from auth.tokens import new_claims, sign

ISSUER = "enterprise-chat-auth"
AUDIENCE = "enterprise-chat"


@dataclass(frozen=True, slots=True)
class BenchKeys:
    private: ed25519.Ed25519PrivateKey
    kid: str = "bench"

    @classmethod
    def generate(cls) -> BenchKeys:
        return cls(ed25519.Ed25519PrivateKey.generate())

    @classmethod
    def from_pem_file(cls, path: Path, kid: str) -> BenchKeys:
        """The signing key of a running system (its gateways must trust the public half)."""
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise ValueError(f"{path} is not an Ed25519 private key")
        return cls(key, kid)

    @property
    def public_pem(self) -> str:
        """What the gateways get as ``JWT_PUBLIC_KEY``."""
        pem = self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return pem.decode()

    def mint(self, user_id: str, org_id: str, *, ttl: float) -> str:
        claims = new_claims(
            issuer=ISSUER,
            audience=AUDIENCE,
            user_id=user_id,
            username=user_id,
            organization=org_id,
            role="user",
            ttl=int(ttl),
        )
        return sign(claims, self.private, self.kid)

    def mint_users(self, count: int, *, ttl: float, orgs: int = 10) -> list[str]:
        """One token per bench user ``bench-user-<i>``, spread over ``orgs`` organisations."""
        return [self.mint(f"bench-user-{i}", f"bench-org-{i % orgs}", ttl=ttl) for i in range(count)]
