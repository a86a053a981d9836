"""The archiver's small HTTP port: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from aiohttp import web

from archiver.worker import Archiver
from common.health import create_health_app


def create_archiver_health_app(archiver: Archiver) -> web.Application:
    return create_health_app(ready=archiver.ready, registry=archiver.metrics.registry)
