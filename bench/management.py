"""Reply-path broker traffic, from RabbitMQ's management API: messages published to reply queues.

Every reply a worker sends (token chunks, ``done``, ``error``; or a batch of them) is one message
routed to a gateway's reply queue ``<prefix>.replies.<instance>.<id>``. The sum of those queues'
``message_stats.publish`` counters before and after a phase, divided by the phase's chats, is the
reply-path messages per chat. The broker refreshes these statistics every
``collect_statistics_interval`` (5 s by default), so a reading counts only once it stopped
changing for longer than that.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

import aiohttp
from yarl import URL

STATS_QUIET_SECONDS = 6.0  # > the broker's default 5 s statistics interval
SETTLE_TIMEOUT = 40.0
PAGE_SIZE = 500


def reply_queue_pattern(prefix: str) -> str:
    """The management API's ``name`` regex for one namespace's reply queues."""
    return f"^{re.escape(prefix)}\\.replies\\."


def published(items: Iterable[Mapping[str, Any]], prefix: str) -> int:
    """Sum of ``message_stats.publish`` over the namespace's reply queues (queues that have no
    statistics yet count 0; names outside the namespace are ignored, whatever the server sent)."""
    pattern = re.compile(reply_queue_pattern(prefix))
    total = 0
    for item in items:
        if not pattern.match(str(item.get("name", ""))):
            continue
        stats = item.get("message_stats")
        value = stats.get("publish", 0) if isinstance(stats, Mapping) else 0
        total += value if isinstance(value, int) else 0
    return total


class ReplyTraffic:
    """Reads the namespace's reply-queue publish counters; every failure reads as None."""

    def __init__(self, management_url: str, amqp_url: str, prefix: str) -> None:
        broker = URL(amqp_url)
        self._vhost = quote(broker.path[1:] or "/", safe="")
        self._base = management_url.rstrip("/")
        self._auth = aiohttp.BasicAuth(broker.user or "guest", broker.password or "guest")
        self.prefix = prefix

    def _url(self, page: int) -> URL:
        query = (
            f"page={page}&page_size={PAGE_SIZE}&use_regex=true&columns=name,message_stats"
            f"&name={quote(reply_queue_pattern(self.prefix), safe='')}"
        )
        return URL(f"{self._base}/api/queues/{self._vhost}?{query}", encoded=True)

    async def total(self, http: aiohttp.ClientSession) -> int | None:
        items: list[Mapping[str, Any]] = []
        page, pages = 1, 1
        try:
            while page <= pages:
                async with http.get(self._url(page), auth=self._auth) as response:
                    if response.status != 200:
                        return None
                    body = await response.json()
                items.extend(body.get("items", []))
                pages = int(body.get("page_count", 1))
                page += 1
        except (aiohttp.ClientError, TimeoutError, ValueError, AttributeError):
            return None
        return published(items, self.prefix)

    async def settled(
        self, quiet: float = STATS_QUIET_SECONDS, timeout: float = SETTLE_TIMEOUT
    ) -> int | None:
        """The counter once it has not changed for ``quiet`` seconds (the broker caught up)."""
        loop = asyncio.get_running_loop()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            last = await self.total(http)
            if last is None:
                return None
            since = deadline = loop.time()
            deadline += timeout
            while loop.time() - since < quiet and loop.time() < deadline:
                await asyncio.sleep(1.0)
                value = await self.total(http)
                if value is None:
                    return None
                if value != last:
                    last, since = value, loop.time()
            return last
