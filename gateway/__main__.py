"""``python -m gateway``: serve one gateway instance."""

from __future__ import annotations

import asyncio

from common.logging import configure_logging
from common.runtime import forever, run, serving
from gateway.app import create_app
from gateway.settings import GatewaySettings
from gateway.state import STATE_KEY


async def serve(settings: GatewaySettings) -> None:
    """Serve until SIGTERM; then fail ``/ready`` for ``DRAIN_SECONDS`` (the load balancer stops
    routing here) before closing, while running streams finish (aiohttp waits for them)."""
    app = create_app(settings)
    # handler_cancellation: a client disconnect cancels the handler, which then publishes a Cancel.
    async with serving(app, settings.host, settings.port, handler_cancellation=True):
        try:
            await forever()
        finally:
            if STATE_KEY in app:
                app[STATE_KEY].draining = True
                await asyncio.sleep(settings.drain_seconds)


def main() -> None:
    settings = GatewaySettings.from_env()
    configure_logging(
        service=settings.common.service_name, level=settings.common.log_level, json=settings.common.log_json
    )
    run(serve(settings))


if __name__ == "__main__":
    main()
