"""Inference worker settings, read from the environment in one place."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from common.archive import S3Settings
from common.settings import CommonSettings, Env, SettingsError


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    common: CommonSettings
    concurrency: int
    ollama_urls: tuple[str, ...]
    ollama_connect_timeout: float
    ollama_read_timeout: float
    ollama_node_cooldown: float
    ollama_node_max_parallel: int
    ollama_probe_interval: float
    chunk_flush_ms: float
    chunk_max_chars: int
    alive_seconds: float
    # Usage events and session-activity updates of the chats ending within this many ms go out as
    # one broker message and one Redis command (common/batching.py); each chat's request is acked
    # after its share was written, so a longer tick only holds the ack (not the answer) longer.
    batch_write_ms: float
    history_window: int
    session_max_turns: int
    session_max_bytes: int
    spill_archive_turns: int
    # session.updated events (one persistent broker message per recorded chat) are published only
    # when something consumes them: nothing in this system does, integrators may.
    session_updated_events: bool
    # Who may publish requests (the AMQP ``user_id`` property, which the broker validates):
    # trusted publishers (the gateways) claim any user and org; an integrator (RabbitMQ user ->
    # its one org) only its org and ``svc:<user>`` ids (inference_worker/admission.py).
    trusted_publishers: frozenset[str]
    integrators: Mapping[str, str]
    http_host: str
    http_port: int
    shutdown_grace: float
    s3: S3Settings

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> WorkerSettings:
        env = Env(environ)
        urls = tuple(u.rstrip("/") for u in env.list("OLLAMA_URLS", ("http://127.0.0.1:11434",)))
        if not urls:
            raise SettingsError("OLLAMA_URLS must list at least one node")
        common = CommonSettings.from_env("inference-worker", env)
        # Default: this worker's own broker user, which the gateways share in every shipped setup.
        trusted = frozenset(env.list("WORKER_TRUSTED_PUBLISHERS", (common.rabbitmq_user,)))
        integrators = env.mapping("WORKER_INTEGRATORS")
        if both := trusted & integrators.keys():
            raise SettingsError(f"WORKER_INTEGRATORS names trusted publishers: {', '.join(sorted(both))}")
        return cls(
            common=common,
            concurrency=env.int("WORKER_CONCURRENCY", 64, minimum=1),
            ollama_urls=urls,
            ollama_connect_timeout=env.float("OLLAMA_CONNECT_TIMEOUT", 5.0, minimum=0.1),
            ollama_read_timeout=env.float("OLLAMA_READ_TIMEOUT", 120.0, minimum=0.1),
            ollama_node_cooldown=env.float("OLLAMA_NODE_COOLDOWN", 15.0, minimum=0.0),
            ollama_node_max_parallel=env.int("OLLAMA_NUM_PARALLEL", 0, minimum=0),
            ollama_probe_interval=env.float("OLLAMA_PROBE_INTERVAL_SECONDS", 10.0, minimum=0.05),
            chunk_flush_ms=env.float("CHUNK_FLUSH_MS", 15.0, minimum=0.0),
            chunk_max_chars=env.int("CHUNK_MAX_CHARS", 96, minimum=1),
            # An attempt silent this long sends an Alive frame (well under REPLY_STALL_SECONDS).
            alive_seconds=env.float("WORKER_ALIVE_SECONDS", 5.0, minimum=0.05),
            batch_write_ms=env.float("BATCH_WRITE_MS", 20.0, minimum=0.0),
            history_window=env.int("HISTORY_WINDOW_TURNS", 20, minimum=0),
            session_max_turns=env.int("SESSION_MAX_TURNS", 200, minimum=2),
            session_max_bytes=env.int("SESSION_MAX_BYTES", 512 * 1024, minimum=1024),
            spill_archive_turns=env.int("SPILL_ARCHIVE_TURNS", 20, minimum=1),
            session_updated_events=env.bool("SESSION_UPDATED_EVENTS", False),
            trusted_publishers=trusted,
            integrators=integrators,
            http_host=env.str("WORKER_HTTP_HOST", "127.0.0.1"),
            http_port=env.int("WORKER_HTTP_PORT", 8201, minimum=0),
            shutdown_grace=env.float("SHUTDOWN_GRACE_SECONDS", 30.0, minimum=0.0),
            s3=S3Settings.from_env(env),
        )
