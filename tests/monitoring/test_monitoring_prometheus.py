"""A real Prometheus, configured from monitoring/prometheus.yml, scrapes the running services and
answers the seed's three queries with data; the rules evaluate cleanly and every dashboard query
is valid PromQL."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from helpers import wait_for
from monitoring_support import (
    MONITORING,
    RULES_DIR,
    PrometheusServer,
    System,
    dashboard_queries,
    finite_values,
    load_yaml,
)

T = TypeVar("T")

# The seed writes `histogram_quantile(0.95, chat_request_duration_seconds)`, which is not valid
# PromQL: histogram_quantile needs the per-bucket rate of the histogram's _bucket series.
SEED_QUERIES = {
    "requests per second": "rate(chat_requests_total[5m])",
    "95th percentile response time": (
        "histogram_quantile(0.95, rate(chat_request_duration_seconds_bucket[5m]))"
    ),
    "active sessions": "chat_active_sessions_total",
}
DEADLINE = 90.0  # seconds for each wait below; a loaded 2-core machine needs a few scrapes


def _config_for(system: System) -> dict[str, Any]:
    """The shipped local config with the test's targets, a 1 s interval and absolute rule paths."""
    config: dict[str, Any] = copy.deepcopy(load_yaml(MONITORING / "prometheus.yml"))
    config["global"] = {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(RULES_DIR / "*.yml")]
    targets = system.targets()
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert targets.keys() <= jobs.keys(), "the test scrapes jobs the shipped config lacks"
    config["scrape_configs"] = [
        {**jobs[name], "static_configs": [{"targets": addresses}]} for name, addresses in targets.items()
    ]
    return config


async def _eventually(what: str, check: Callable[[], Awaitable[T]], server: PrometheusServer) -> T:
    """Poll ``check`` until it returns something truthy, within DEADLINE."""
    return await wait_for(check, DEADLINE, 0.5, what=what, details=lambda: f"log:\n{server.log()}")


async def _keep_chatting(system: System) -> None:
    """Steady traffic, so rates and quantiles have increases to work on."""
    for i in itertools.count():
        with contextlib.suppress(aiohttp.ClientError, AssertionError):
            await system.chat(f"steady-{i % 5}", f"steady-{i % 3}", stream=i % 2 == 0)
        await asyncio.sleep(0.2)


@pytest.mark.timeout(300)
async def test_seed_queries_return_data_from_a_real_prometheus(
    busy_system: System, prometheus_bin: str, tmp_path: Path
) -> None:
    server = PrometheusServer(prometheus_bin, _config_for(busy_system), tmp_path)
    traffic = asyncio.get_running_loop().create_task(_keep_chatting(busy_system))
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            await server.start(session)

            async def all_targets_up() -> bool:
                active = (await server.api(session, "targets"))["activeTargets"]
                expected = sum(len(t) for t in busy_system.targets().values())
                return len(active) == expected and all(t["health"] == "up" for t in active)

            await _eventually("every target up", all_targets_up, server)

            async def rate_positive() -> list[float]:
                values = finite_values(await server.query(session, SEED_QUERIES["requests per second"]))
                return [v for v in values if v > 0]

            await _eventually("rate(chat_requests_total[5m]) > 0", rate_positive, server)

            async def p95_known() -> list[float]:
                return finite_values(
                    await server.query(session, SEED_QUERIES["95th percentile response time"])
                )

            p95 = await _eventually("p95 of chat_request_duration_seconds", p95_known, server)
            assert all(0 < v < 60 for v in p95), p95

            async def sessions_counted() -> list[float]:
                values = finite_values(await server.query(session, SEED_QUERIES["active sessions"]))
                return [v for v in values if v >= 1]

            await _eventually("chat_active_sessions_total >= 1", sessions_counted, server)
            # Every gateway reports the same cluster-wide count.
            per_gateway = await server.query(session, SEED_QUERIES["active sessions"])
            assert len(per_gateway) == 2
            assert len({sample["value"][1] for sample in per_gateway}) <= 2  # equal but for a scrape apart

            # Every dashboard query is valid PromQL for this Prometheus.
            for query in dashboard_queries():
                try:
                    await server.query(session, query.expr)
                except AssertionError as exc:
                    raise AssertionError(f"{query.where}: {exc}") from None

            async def rules_evaluated() -> list[dict[str, Any]]:
                groups = (await server.api(session, "rules"))["groups"]
                rules = [rule for group in groups for rule in group["rules"]]
                return rules if rules and all(rule["health"] != "unknown" for rule in rules) else []

            rules = await _eventually("every rule evaluated", rules_evaluated, server)
            assert [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []

            async def recorded() -> list[float]:
                return finite_values(await server.query(session, "job:chat_requests:rate5m"))

            await _eventually("a recording rule's series from real data", recorded, server)
    finally:
        traffic.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await traffic
        await server.stop()
