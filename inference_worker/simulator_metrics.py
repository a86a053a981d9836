"""Prometheus view of the simulator's counters (``GET /metrics``), read at scrape time."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector


class Stats(Protocol):
    generations_started: int
    generations_completed: int
    generations_aborted: int
    generations_failed: int
    requests_rejected: int
    tokens_generated: int
    in_flight: int


class _StatsCollector(Collector):
    def __init__(self, stats: Callable[[], Stats]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        stats = self._stats()
        generations = CounterMetricFamily(
            "simulator_generations", "Generations by outcome", labels=["outcome"]
        )
        for outcome, value in (
            ("started", stats.generations_started),
            ("completed", stats.generations_completed),
            ("aborted", stats.generations_aborted),
            ("failed", stats.generations_failed),
        ):
            generations.add_metric([outcome], value)
        yield generations
        yield CounterMetricFamily(
            "simulator_busy_rejections", "Requests answered 503 server busy", value=stats.requests_rejected
        )
        yield CounterMetricFamily(
            "simulator_tokens_generated", "Tokens streamed", value=stats.tokens_generated
        )
        yield GaugeMetricFamily("simulator_in_flight", "Generations running now", value=stats.in_flight)


def render(stats: Callable[[], Stats]) -> bytes:
    """The exposition text for the current counters."""
    registry = CollectorRegistry()
    registry.register(_StatsCollector(stats))
    return generate_latest(registry)
