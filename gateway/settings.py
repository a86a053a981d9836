"""Gateway settings, read from the environment in one place."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from common.archive import S3Settings
from common.settings import CommonSettings, Env, SettingsError
from gateway.cors import CorsPolicy


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    common: CommonSettings
    host: str
    port: int
    instance_id: str
    jwt_public_keys: tuple[str, ...]
    jwks_url: str | None
    jwt_issuer: str
    jwt_audience: str
    jwt_algorithms: tuple[str, ...]
    jwt_leeway: float
    default_model: str
    allowed_models: tuple[str, ...]
    chat_deadline: float
    job_deadline: float
    max_body_bytes: int
    prompt_max_chars: int
    sse_heartbeat: float
    reply_stall: float
    resume_grace: float
    busy_retry_after: int
    publish_timeout: float
    drain_seconds: float
    rate_limit_per_minute: int
    rate_limit_org_per_minute: int
    rate_limit_window: float
    s3: S3Settings
    rabbitmq_management_url: str | None
    cors: CorsPolicy
    # API keys (gateway/api_keys.py): where they are verified, and for how long an answer is kept.
    api_key_verify_url: str | None = None
    api_key_cache_ttl: float = 30.0
    # How often the organizations over their monthly token quota are re-read (gateway/quota.py).
    quota_refresh: float = 2.0
    internal_token: str = field(default="", repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> GatewaySettings:
        env = Env(environ)
        common = CommonSettings.from_env("gateway", env)
        keys: list[str] = []
        if pem := env.optional("JWT_PUBLIC_KEY"):
            keys.append(pem)
        if path := env.optional("JWT_PUBLIC_KEY_FILE"):
            try:
                keys.append(Path(path).read_text())
            except OSError as exc:
                raise SettingsError(f"JWT_PUBLIC_KEY_FILE {path!r} cannot be read: {exc}") from exc
        jwks_url = env.optional("JWKS_URL")
        if not keys and jwks_url is None:
            jwks_url = "http://127.0.0.1:8001/.well-known/jwks.json"
        port = env.int("GATEWAY_PORT", 8101, minimum=0)
        # The management API gives the request queue's depth (quorum queues report none over AMQP).
        management = env.str("RABBITMQ_MANAGEMENT_URL", "http://127.0.0.1:15672")
        algorithms = env.list("JWT_ALGORITHMS", ("EdDSA", "RS256"))
        for alg in algorithms:
            if alg.upper().startswith("HS") or alg.lower() == "none":
                raise SettingsError("JWT_ALGORITHMS may only list asymmetric algorithms")
        return cls(
            common=common,
            host=env.str("GATEWAY_HOST", "127.0.0.1"),
            port=port,
            instance_id=env.str("INSTANCE_ID", f"{socket.gethostname()}-{port}"),
            jwt_public_keys=tuple(keys),
            jwks_url=jwks_url,
            jwt_issuer=env.str("JWT_ISSUER", "enterprise-chat-auth"),
            jwt_audience=env.str("JWT_AUDIENCE", "enterprise-chat"),
            jwt_algorithms=algorithms,
            jwt_leeway=env.float("JWT_LEEWAY_SECONDS", 5.0, minimum=0.0),
            default_model=env.str("DEFAULT_MODEL", "llama3.2"),
            allowed_models=env.list("ALLOWED_MODELS", ()),
            chat_deadline=env.float("CHAT_DEADLINE_SECONDS", 120.0, minimum=1.0),
            job_deadline=env.float("JOB_DEADLINE_SECONDS", 900.0, minimum=1.0),
            max_body_bytes=env.int("MAX_BODY_BYTES", 256 * 1024, minimum=1024),
            prompt_max_chars=env.int("PROMPT_MAX_CHARS", 32_000, minimum=1),
            sse_heartbeat=env.float("SSE_HEARTBEAT_SECONDS", 10.0, minimum=0.05),
            # The watchdog: no reply at all (not even a worker's Alive frame) this long -> error.
            reply_stall=env.float("REPLY_STALL_SECONDS", 15.0, minimum=0.1),
            # A client that disconnects has this long to resume before its generation is cancelled.
            resume_grace=env.float("RESUME_GRACE_SECONDS", 10.0, minimum=0.0),
            busy_retry_after=env.int("BUSY_RETRY_AFTER_SECONDS", 2, minimum=1),
            publish_timeout=env.float("PUBLISH_TIMEOUT_SECONDS", 5.0, minimum=0.1),
            drain_seconds=env.float("DRAIN_SECONDS", 3.0, minimum=0.0),
            rate_limit_per_minute=env.int("RATE_LIMIT_PER_MINUTE", 100, minimum=0),
            rate_limit_org_per_minute=env.int("RATE_LIMIT_ORG_PER_MINUTE", 0, minimum=0),
            rate_limit_window=env.float("RATE_LIMIT_WINDOW_SECONDS", 60.0, minimum=1.0),
            s3=S3Settings.from_env(env),
            rabbitmq_management_url=None if management.lower() in {"off", "none"} else management.rstrip("/"),
            api_key_verify_url=_api_key_verify_url(env),
            api_key_cache_ttl=env.float("API_KEY_CACHE_TTL", 30.0, minimum=1.0),
            quota_refresh=env.float("QUOTA_REFRESH_SECONDS", 2.0, minimum=0.05),
            internal_token=env.optional("INTERNAL_API_TOKEN") or "",
            cors=CorsPolicy.from_env(env),
        )


def _api_key_verify_url(env: Env) -> str | None:
    """``AUTH_URL`` (default the local auth service) + the internal verification path; ``off``
    disables API keys."""
    base = env.str("AUTH_URL", "http://127.0.0.1:8001")
    if base.lower() in {"off", "none"}:
        return None
    return base.rstrip("/") + "/internal/api-keys/verify"
