"""``python -m inference_worker``: run one worker process until SIGTERM/SIGINT, then drain."""

from __future__ import annotations

from common.logging import configure_logging
from common.runtime import forever, run, serving
from inference_worker.http import create_worker_health_app
from inference_worker.settings import WorkerSettings
from inference_worker.worker import InferenceWorker


async def serve(settings: WorkerSettings) -> None:
    """Consume until cancelled (by a signal); closing the worker drains running generations."""
    async with (
        InferenceWorker(settings) as worker,
        serving(create_worker_health_app(worker), settings.http_host, settings.http_port),
    ):
        await forever()


def main() -> None:
    settings = WorkerSettings.from_env()
    configure_logging(
        service=settings.common.service_name, level=settings.common.log_level, json=settings.common.log_json
    )
    run(serve(settings))


if __name__ == "__main__":
    main()
