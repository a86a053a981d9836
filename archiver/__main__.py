"""``python -m archiver``: archive finished sessions and sweep idle ones until SIGTERM."""

from __future__ import annotations

from archiver.http import create_archiver_health_app
from archiver.settings import ArchiverSettings
from archiver.worker import Archiver
from common.logging import configure_logging
from common.runtime import forever, run, serving


async def serve(settings: ArchiverSettings) -> None:
    async with (
        Archiver(settings) as archiver,
        serving(create_archiver_health_app(archiver), settings.http_host, settings.http_port),
    ):
        await forever()


def main() -> None:
    settings = ArchiverSettings.from_env()
    configure_logging(
        service=settings.common.service_name, level=settings.common.log_level, json=settings.common.log_json
    )
    run(serve(settings))


if __name__ == "__main__":
    main()
