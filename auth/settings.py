"""The auth service's settings, read from the environment in exactly one place."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from common.settings import CommonSettings, Env, SettingsError

__all__ = ["AuthSettings", "BootstrapAdmin", "LedgerSettings", "Network"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Settings that changed meaning: refused with a pointer, so an old configuration cannot silently
# run with other semantics (e.g. trust no proxy and throttle every client as one address).
_REPLACED = {
    "AUTH_TRUST_FORWARDED": "AUTH_TRUSTED_PROXIES (the proxies' addresses or networks)",
    "AUTH_TRUSTED_PROXY_COUNT": "AUTH_TRUSTED_PROXIES (the proxies' addresses or networks)",
    "AUTH_LOGIN_MAX_FAILURES_PER_USER": "AUTH_LOGIN_USER_CEILING (see auth/bruteforce.py: no more lock-outs)",
}


@dataclass(frozen=True, slots=True)
class BootstrapAdmin:
    """The first admin, created at start-up when it does not exist yet."""

    username: str
    email: str
    organization: str
    password: str = field(repr=False)


def _read_file(env_name: str, path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"{env_name}: cannot read {path!r}: {exc.strerror}") from exc


def _signing_key(env: Env, environment: str) -> str | None:
    path = env.optional("AUTH_SIGNING_KEY_FILE")
    text = env.optional("AUTH_SIGNING_KEY")
    if path and text:
        raise SettingsError("set only one of AUTH_SIGNING_KEY_FILE and AUTH_SIGNING_KEY")
    pem = _read_file("AUTH_SIGNING_KEY_FILE", path) if path else text
    if pem is None and environment == "production":
        raise SettingsError(
            "AUTH_SIGNING_KEY_FILE (or AUTH_SIGNING_KEY) is required in production; "
            "generate one with: openssl genpkey -algorithm ed25519"
        )
    return pem


def _bootstrap_admin(env: Env, environment: str) -> BootstrapAdmin | None:
    names = ("USERNAME", "PASSWORD", "EMAIL")
    values = {name: env.optional(f"AUTH_BOOTSTRAP_ADMIN_{name}") for name in names}
    if not any(values.values()):
        return None
    missing = [f"AUTH_BOOTSTRAP_ADMIN_{name}" for name, value in values.items() if not value]
    if missing:
        raise SettingsError(f"bootstrap admin is half configured; also set {', '.join(missing)}")
    return BootstrapAdmin(
        username=env.str("AUTH_BOOTSTRAP_ADMIN_USERNAME"),
        email=env.str("AUTH_BOOTSTRAP_ADMIN_EMAIL"),
        organization=env.str("AUTH_BOOTSTRAP_ADMIN_ORGANIZATION", "default"),
        password=env.secret("AUTH_BOOTSTRAP_ADMIN_PASSWORD", environment=environment),
    )


DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/enterprise_chat"


def _database_url(env: Env, environment: str) -> str:
    url = env.optional("DATABASE_URL")
    if url is None:
        if environment == "production":
            raise SettingsError("DATABASE_URL is required in production (postgresql://user:pass@host/db)")
        return DEFAULT_DATABASE_URL
    if not url.startswith(("postgresql://", "postgres://")):
        raise SettingsError("DATABASE_URL must be postgresql://user[:password]@host[:port]/database")
    return url


def _internal_token(env: Env, environment: str) -> str:
    token = env.optional("INTERNAL_API_TOKEN") or ""
    if not token and environment == "production":
        raise SettingsError("INTERNAL_API_TOKEN is required in production (shared by auth and gateways)")
    return token


def _trusted_proxies(env: Env) -> tuple[Network, ...]:
    networks: list[Network] = []
    for item in env.list("AUTH_TRUSTED_PROXIES"):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise SettingsError(
                f"AUTH_TRUSTED_PROXIES: {item!r} is not an IP address or network (e.g. 10.0.0.5, 10.0.0.0/24)"
            ) from None
    return tuple(networks)


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """Everything the auth service is configured with; built by :meth:`from_env`."""

    common: CommonSettings
    host: str
    port: int
    issuer: str
    audience: str
    access_token_ttl: int
    refresh_token_ttl: int
    token_leeway: int
    signing_key_pem: str | None = field(repr=False)
    previous_public_keys_pem: str | None
    bcrypt_rounds: int
    hash_workers: int
    hash_queue_timeout: float
    # Login throttling (auth/bruteforce.py has the policy and why).
    login_free_failures: int
    login_backoff_base: float
    login_backoff_max: float
    login_max_failures_per_ip: int
    login_user_ceiling: int
    login_failure_window: float
    login_known_address_days: float
    register_max_per_ip: int
    register_window: float
    # X-Forwarded-For is believed only from these TCP peers (common/http.py client_address).
    trusted_proxies: tuple[Network, ...]
    max_body_bytes: int
    admin_page_size: int
    bootstrap_admin: BootstrapAdmin | None
    # PostgreSQL: users, organizations, API keys, usage ledger, audit log (auth/database.py).
    database_url: str = field(repr=False)
    # Self-registration without an invitation or allowed domain creates a personal organization
    # (true) or is refused (false; the default in production).
    open_signup: bool
    invitation_ttl: float
    # How long a gateway may serve an API key from its cache before asking again (gateway/api_keys.py);
    # a revocation is published in Redis for twice this long.
    api_key_cache_ttl: float
    # Shared with the gateways: authorizes ``/internal/api-keys/verify``; empty = unauthenticated
    # (development only: the path is not routed by HAProxy).
    internal_token: str = field(repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AuthSettings:
        env = Env(environ)
        for name, replacement in _REPLACED.items():
            if env.optional(name) is not None:
                raise SettingsError(f"{name} is no longer read; use {replacement}")
        common = CommonSettings.from_env("auth", env)
        previous_path = env.optional("AUTH_PREVIOUS_PUBLIC_KEYS_FILE")
        bcrypt_rounds = env.int("AUTH_BCRYPT_ROUNDS", 12, minimum=4)
        if bcrypt_rounds > 31:
            raise SettingsError("AUTH_BCRYPT_ROUNDS must be <= 31")
        if bcrypt_rounds < 10 and common.environment == "production":
            raise SettingsError("AUTH_BCRYPT_ROUNDS below 10 is refused in production")
        return cls(
            common=common,
            host=env.str("AUTH_HOST", "0.0.0.0"),
            port=env.int("AUTH_PORT", 8001, minimum=1),
            issuer=env.str("AUTH_ISSUER", "enterprise-chat-auth"),
            audience=env.str("AUTH_AUDIENCE", "enterprise-chat"),
            # Below 30 s only outside production (tests of what outlives a token).
            access_token_ttl=env.int(
                "AUTH_ACCESS_TOKEN_TTL", 900, minimum=30 if common.environment == "production" else 1
            ),
            refresh_token_ttl=env.int("AUTH_REFRESH_TOKEN_TTL", 14 * 24 * 3600, minimum=60),
            token_leeway=env.int("AUTH_TOKEN_LEEWAY", 5, minimum=0),
            signing_key_pem=_signing_key(env, common.environment),
            previous_public_keys_pem=(
                _read_file("AUTH_PREVIOUS_PUBLIC_KEYS_FILE", previous_path) if previous_path else None
            ),
            bcrypt_rounds=bcrypt_rounds,
            hash_workers=env.int("AUTH_HASH_WORKERS", min(4, os.cpu_count() or 1), minimum=1),
            hash_queue_timeout=env.float("AUTH_HASH_QUEUE_TIMEOUT", 10.0, minimum=0.1),
            login_free_failures=env.int("AUTH_LOGIN_FREE_FAILURES", 3, minimum=0),
            login_backoff_base=env.float("AUTH_LOGIN_BACKOFF_BASE", 1.0, minimum=0.001),
            login_backoff_max=env.float("AUTH_LOGIN_BACKOFF_MAX", 900.0, minimum=0.001),
            login_max_failures_per_ip=env.int("AUTH_LOGIN_MAX_FAILURES_PER_IP", 30, minimum=1),
            login_user_ceiling=env.int("AUTH_LOGIN_USER_CEILING", 100, minimum=1),
            login_failure_window=env.float("AUTH_LOGIN_FAILURE_WINDOW", 900.0, minimum=1.0),
            login_known_address_days=env.float("AUTH_LOGIN_KNOWN_ADDRESS_DAYS", 30.0, minimum=0.0),
            register_max_per_ip=env.int("AUTH_REGISTER_MAX_PER_IP", 20, minimum=0),
            register_window=env.float("AUTH_REGISTER_WINDOW", 3600.0, minimum=1.0),
            trusted_proxies=_trusted_proxies(env),
            max_body_bytes=env.int("AUTH_MAX_BODY_BYTES", 64 * 1024, minimum=1024),
            admin_page_size=env.int("AUTH_ADMIN_PAGE_SIZE", 50, minimum=1),
            bootstrap_admin=_bootstrap_admin(env, common.environment),
            database_url=_database_url(env, common.environment),
            open_signup=env.bool("AUTH_OPEN_SIGNUP", common.environment != "production"),
            invitation_ttl=env.float("AUTH_INVITATION_TTL", 7 * 86400.0, minimum=60.0),
            api_key_cache_ttl=env.float("API_KEY_CACHE_TTL", 30.0, minimum=1.0),
            internal_token=_internal_token(env, common.environment),
        )


@dataclass(frozen=True, slots=True)
class LedgerSettings:
    """The usage ledger consumer (``python -m auth.ledger``): broker events -> PostgreSQL."""

    common: CommonSettings
    instance_id: str
    database_url: str = field(repr=False)
    # A batch is written when it holds ``batch_size`` events or its first is ``batch_seconds`` old.
    batch_size: int
    batch_seconds: float
    # How often organizations' monthly quotas are checked against the ledger (gateways follow
    # within their own refresh interval: the check lags the ledger by a few seconds).
    quota_interval: float
    http_host: str
    http_port: int

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LedgerSettings:
        env = Env(environ)
        common = CommonSettings.from_env("ledger", env)
        return cls(
            common=common,
            instance_id=env.str("INSTANCE_ID", os.uname().nodename),
            database_url=_database_url(env, common.environment),
            batch_size=env.int("LEDGER_BATCH_SIZE", 200, minimum=1),
            batch_seconds=env.float("LEDGER_BATCH_SECONDS", 0.25, minimum=0.001),
            quota_interval=env.float("LEDGER_QUOTA_INTERVAL", 2.0, minimum=0.05),
            http_host=env.str("LEDGER_HTTP_HOST", "127.0.0.1"),
            http_port=env.int("LEDGER_HTTP_PORT", 8501, minimum=0),
        )
