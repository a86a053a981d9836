"""Archiver settings, read from the environment in one place."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass

from common.archive import S3Settings
from common.settings import CommonSettings, Env


@dataclass(frozen=True, slots=True)
class ArchiverSettings:
    common: CommonSettings
    s3: S3Settings
    instance_id: str
    concurrency: int
    idle_seconds: float
    sweep_interval: float
    sweep_batch: int
    write_attempts: int
    retry_delay: float
    retry_delay_max: float
    http_host: str
    http_port: int

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ArchiverSettings:
        env = Env(environ)
        return cls(
            common=CommonSettings.from_env("archiver", env),
            s3=S3Settings.from_env(env),
            instance_id=env.str("INSTANCE_ID", socket.gethostname()),
            concurrency=env.int("ARCHIVER_CONCURRENCY", 8, minimum=1),
            idle_seconds=env.float("SESSION_IDLE_SECONDS", 1800.0, minimum=0.1),
            sweep_interval=env.float("SWEEP_INTERVAL_SECONDS", 30.0, minimum=0.05),
            sweep_batch=env.int("SWEEP_BATCH", 500, minimum=1),
            write_attempts=env.int("ARCHIVE_WRITE_ATTEMPTS", 3, minimum=1),
            retry_delay=env.float("ARCHIVE_RETRY_DELAY_SECONDS", 5.0, minimum=0.05),
            retry_delay_max=env.float("ARCHIVE_RETRY_DELAY_MAX_SECONDS", 300.0, minimum=0.05),
            http_host=env.str("ARCHIVER_HTTP_HOST", "127.0.0.1"),
            http_port=env.int("ARCHIVER_HTTP_PORT", 8301, minimum=0),
        )
