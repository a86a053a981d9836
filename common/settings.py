"""Typed settings read from environment variables.

Each service defines one frozen dataclass with a ``from_env`` constructor built from these
helpers; nothing else in the code base reads ``os.environ``.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Mapping
from dataclasses import dataclass

from yarl import URL

PLACEHOLDER_MARKERS = ("change-me", "changeme", "placeholder", "example")
DEFAULT_HTTP_READ_TIMEOUT = 10.0


class SettingsError(ValueError):
    """A setting is missing or malformed; raised at start-up, before any connection is made."""


class Env:
    """Typed access to an environment mapping (``os.environ`` by default)."""

    def __init__(self, environ: Mapping[builtins.str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    def str(self, name: builtins.str, default: builtins.str | None = None) -> builtins.str:
        value = self._environ.get(name)
        if value is None or value == "":
            if default is None:
                raise SettingsError(f"{name} is required")
            return default
        return value

    def optional(self, name: builtins.str) -> builtins.str | None:
        value = self._environ.get(name)
        return value if value else None

    def int(
        self, name: builtins.str, default: builtins.int, *, minimum: builtins.int | None = None
    ) -> builtins.int:
        raw = self._environ.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError as exc:
            raise SettingsError(f"{name} must be an integer, got {raw!r}") from exc
        if minimum is not None and value < minimum:
            raise SettingsError(f"{name} must be >= {minimum}, got {value}")
        return value

    def float(
        self, name: builtins.str, default: builtins.float, *, minimum: builtins.float | None = None
    ) -> builtins.float:
        raw = self._environ.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = float(raw)
        except ValueError as exc:
            raise SettingsError(f"{name} must be a number, got {raw!r}") from exc
        if minimum is not None and value < minimum:
            raise SettingsError(f"{name} must be >= {minimum}, got {value}")
        return value

    def bool(self, name: builtins.str, default: builtins.bool) -> builtins.bool:
        raw = self._environ.get(name)
        if raw is None or raw == "":
            return default
        lowered = raw.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        raise SettingsError(f"{name} must be a boolean, got {raw!r}")

    def list(self, name: builtins.str, default: tuple[builtins.str, ...] = ()) -> tuple[builtins.str, ...]:
        raw = self._environ.get(name)
        if raw is None or raw.strip() == "":
            return default
        return tuple(item.strip() for item in raw.split(",") if item.strip())

    def mapping(self, name: builtins.str) -> dict[builtins.str, builtins.str]:
        """``key=value`` pairs, comma-separated (``crm=org-acme,billing=org-fin``); a key given
        twice or an item without ``=`` is refused."""
        pairs: dict[builtins.str, builtins.str] = {}
        for item in self.list(name):
            key, sep, value = (part.strip() for part in item.partition("="))
            if not sep or not key or not value:
                raise SettingsError(f"{name} must be key=value pairs, got {item!r}")
            if key in pairs:
                raise SettingsError(f"{name} names {key!r} twice")
            pairs[key] = value
        return pairs

    def secret(
        self, name: builtins.str, *, environment: builtins.str, default: builtins.str | None = None
    ) -> builtins.str:
        """A secret: refused when it looks like a placeholder outside development."""
        value = self.str(name, default)
        if environment != "development" and any(m in value.lower() for m in PLACEHOLDER_MARKERS):
            raise SettingsError(f"{name} holds a placeholder value; generate a real secret")
        return value


@dataclass(frozen=True, slots=True)
class CommonSettings:
    """Settings every service shares: where the broker and Redis are, how to log, and how long an
    HTTP client may take to send a request (``http_read_timeout``: for the headers, and again for
    the body; see :mod:`common.server`)."""

    environment: str
    service_name: str
    log_level: str
    log_json: bool
    rabbitmq_url: str
    broker_prefix: str
    redis_url: str
    redis_cluster: bool
    redis_max_connections: int
    key_prefix: str
    queue_max_length: int
    queue_delivery_limit: int
    job_ttl: int
    resume_record_seconds: float  # a chat's record outlives its deadline this long (common/exchanges.py)
    http_read_timeout: float

    @property
    def rabbitmq_user(self) -> str:
        """The RabbitMQ user of ``rabbitmq_url`` (aio-pika's default, ``guest``, when it names
        none): the ``user_id`` property the broker lets this service's messages carry."""
        return URL(self.rabbitmq_url).user or "guest"

    @classmethod
    def from_env(cls, service_name: str, env: Env) -> CommonSettings:
        environment = env.str("ENVIRONMENT", "development")
        if environment not in {"development", "production", "test"}:
            raise SettingsError("ENVIRONMENT must be development, production or test")
        return cls(
            environment=environment,
            service_name=env.str("SERVICE_NAME", service_name),
            log_level=env.str("LOG_LEVEL", "info").lower(),
            log_json=env.bool("LOG_JSON", environment == "production"),
            rabbitmq_url=env.str("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/"),
            broker_prefix=env.str("BROKER_PREFIX", "chat"),
            redis_url=env.str("REDIS_URL", "redis://127.0.0.1:6379/0"),
            redis_cluster=env.bool("REDIS_CLUSTER", False),
            redis_max_connections=env.int("REDIS_MAX_CONNECTIONS", 256, minimum=8),
            key_prefix=env.str("REDIS_KEY_PREFIX", ""),
            queue_max_length=env.int("REQUEST_QUEUE_MAX_LENGTH", 10_000, minimum=1),
            queue_delivery_limit=env.int("REQUEST_DELIVERY_LIMIT", 5, minimum=1),
            job_ttl=env.int("JOB_TTL_SECONDS", 86_400, minimum=60),
            resume_record_seconds=env.float("RESUME_RECORD_SECONDS", 60.0, minimum=1.0),
            http_read_timeout=env.float("HTTP_READ_TIMEOUT_SECONDS", DEFAULT_HTTP_READ_TIMEOUT, minimum=0.1),
        )
