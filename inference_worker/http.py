"""The worker's small HTTP port: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from aiohttp import web

from common.health import create_health_app
from inference_worker.worker import InferenceWorker


def create_worker_health_app(worker: InferenceWorker) -> web.Application:
    def refresh() -> None:
        for node in worker.pool.nodes:
            worker.metrics.node_in_flight.labels(node.url).set(node.in_flight)

    return create_health_app(ready=worker.ready, registry=worker.metrics.registry, before_scrape=refresh)
