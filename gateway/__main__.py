"""``python -m gateway``: serve one gateway instance."""

from __future__ import annotations

import asyncio

from common.runtime import forever, launch, serving
from gateway.app import create_app
from gateway.appkeys import LIFECYCLE
from gateway.settings import GatewaySettings


async def serve(settings: GatewaySettings) -> None:
    """Serve until SIGTERM; then fail ``/ready`` for ``DRAIN_SECONDS`` (the load balancer stops
    routing here) before closing, while running streams finish (aiohttp waits for them)."""
    app = create_app(settings)
    # handler_cancellation: a client disconnect cancels the handler, which then publishes a Cancel.
    async with serving(
        app,
        settings.host,
        settings.port,
        read_timeout=settings.common.http_read_timeout,
        handler_cancellation=True,
    ):
        try:
            await forever()
        finally:
            app[LIFECYCLE].draining = True
            await asyncio.sleep(settings.drain_seconds)


def main() -> None:
    launch(GatewaySettings.from_env(), serve)


if __name__ == "__main__":
    main()
