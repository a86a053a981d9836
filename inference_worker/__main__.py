"""``python -m inference_worker``: run one worker process until SIGTERM/SIGINT, then drain running
requests; ``--burst``: until the request queue is empty and nothing is running."""

from __future__ import annotations

from collections.abc import Sequence

from common.service import main as service_main
from inference_worker.http import create_worker_health_app
from inference_worker.settings import WorkerSettings
from inference_worker.worker import InferenceWorker


def main(argv: Sequence[str] | None = None) -> None:
    service_main(
        WorkerSettings.from_env,
        InferenceWorker,
        create_worker_health_app,
        prog="python -m inference_worker",
        argv=argv,
    )


if __name__ == "__main__":
    main()
