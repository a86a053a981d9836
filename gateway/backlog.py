"""The request queue's backlog, read from RabbitMQ's management API (for the queue-depth gauge).

Quorum queues report their length to the management API, not through a passive declare on a
channel, so the gateway asks the management API at scrape time (DESIGN.md, metrics).
"""

from __future__ import annotations

from urllib.parse import quote

import aiohttp
from yarl import URL

__all__ = ["QueueBacklog"]


class QueueBacklog:
    def __init__(self, http: aiohttp.ClientSession, management_url: str, amqp_url: str, queue: str) -> None:
        self._http = http
        self.queue = queue
        broker = URL(amqp_url)
        vhost = quote(broker.path[1:] or "/", safe="")
        # encoded=True keeps the vhost's %2F from being decoded into a path separator
        self._url = URL(f"{management_url}/api/queues/{vhost}/{quote(queue, safe='')}", encoded=True)
        self._headers = {
            "Authorization": aiohttp.encode_basic_auth(broker.user or "guest", broker.password or "guest")
        }

    async def depth(self) -> int | None:
        """Messages waiting in the queue; None when the management API cannot tell."""
        try:
            async with self._http.get(
                self._url, headers=self._headers, timeout=aiohttp.ClientTimeout(total=1)
            ) as response:
                if response.status != 200:
                    return None
                payload = await response.json()
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None
        # A queue declared moments ago has no statistics yet (the broker emits them every ~5 s).
        messages = payload.get("messages", 0) if isinstance(payload, dict) else None
        return messages if isinstance(messages, int) else None
