"""Prometheus metrics of one archiver instance (its own registry)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


class ArchiverMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)  # process_cpu_seconds_total, process_resident_memory_bytes, ...
        self.archived = Counter(
            "archiver_sessions_archived_total", "Archive attempts by result", ["result"], registry=r
        )
        self.lag = Histogram(
            "archiver_lag_seconds",
            "From the session event to the verified object",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.failures = Counter(
            "archiver_failures_total", "Failed archive attempts by error", ["error"], registry=r
        )
        self.retries = Counter(
            "archiver_retries_scheduled_total", "Events sent to the delay queue", registry=r
        )
        self.object_bytes = Histogram(
            "archiver_object_bytes",
            "Size of written archive objects",
            buckets=(1e3, 1e4, 1e5, 1e6, 1e7, 1e8),
            registry=r,
        )
        self.swept = Counter(
            "archiver_idle_sessions_ended_total", "Sessions ended by the idle sweeper", registry=r
        )
        self.rejected = Counter(
            "archiver_rejected_messages_total", "Invalid events dead-lettered", registry=r
        )
        self.oldest_idle = Gauge(
            "archiver_oldest_activity_age_seconds",
            "Age of the least recently active session still in Redis (archive backlog)",
            registry=r,
        )
