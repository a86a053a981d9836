"""``python -m archiver``: archive finished sessions and sweep idle ones until SIGTERM/SIGINT;
``--burst``: until the archive queues are empty and nothing is running."""

from __future__ import annotations

from collections.abc import Sequence

from archiver.http import create_archiver_health_app
from archiver.settings import ArchiverSettings
from archiver.worker import Archiver
from common.service import main as service_main


def main(argv: Sequence[str] | None = None) -> None:
    service_main(
        ArchiverSettings.from_env,
        Archiver,
        create_archiver_health_app,
        prog="python -m archiver",
        argv=argv,
    )


if __name__ == "__main__":
    main()
