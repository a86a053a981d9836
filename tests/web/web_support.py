"""What the browser tests share: the stack under test and the screenshot folder."""

from __future__ import annotations

import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer
from deploy.deploy_support import HAProxy
from helpers import simulator_url
from playwright.async_api import Page

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "web"
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
GATEWAYS_UP = {"gateways/gateway1": "UP", "gateways/gateway2": "UP", "auth/auth1": "UP"}


@dataclass
class WebStack:
    """The stack behind one HAProxy; ``url`` is the front door."""

    haproxy: HAProxy
    haproxy_binary: str
    gateways: list[Any]
    auth: TestServer
    simulator: TestServer
    worker: Any  # the running inference worker (None while stopped)
    new_worker: Callable[[], Awaitable[Any]]

    async def stop_worker(self) -> None:
        """No worker consumes the request queue any more (requests wait there, up to its limit)."""
        await self.worker.close()
        self.worker = None

    async def start_worker(self) -> None:
        """A new worker, configured as the first; it takes what waits in the queue."""
        self.worker = await self.new_worker()

    @property
    def url(self) -> str:
        return self.haproxy.http_url

    async def simulator_stats(self) -> dict[str, int]:
        url = f"{simulator_url(self.simulator)}/sim/stats"
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            stats: dict[str, int] = await response.json()
            return stats

    async def simulator_config(self, **changes: Any) -> None:
        url = f"{simulator_url(self.simulator)}/sim/config"
        async with aiohttp.ClientSession() as session, session.post(url, json=changes) as response:
            assert response.status == 200, await response.text()


class Shots:
    """Numbered screenshots of one test's steps, in ``test-artifacts/web/<test>/``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.count = 0
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)

    async def take(self, page: Page, step: str) -> Path:
        self.count += 1
        path = self.directory / f"{self.count:02d}-{step}.png"
        await page.screenshot(path=str(path), full_page=True, animations="disabled")
        return path
