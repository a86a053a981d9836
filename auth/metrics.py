"""Prometheus metrics of the auth service, in a registry owned by one app (no global registry)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

__all__ = ["AuthMetrics"]

_HASH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0)


@dataclass(frozen=True, slots=True)
class AuthMetrics:
    registry: CollectorRegistry
    logins: Counter
    failures: Counter
    registrations: Counter
    password_hash_seconds: Histogram
    password_hash_in_flight: Gauge

    @classmethod
    def create(cls) -> AuthMetrics:
        registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=registry)  # process_cpu_seconds_total, process_resident_memory_bytes
        return cls(
            registry=registry,
            logins=Counter(
                "auth_logins_total",
                "Login attempts by result (success, invalid_credentials, locked, disabled)",
                ["result"],
                registry=registry,
            ),
            failures=Counter(
                "auth_failures_total",
                "Rejected authentication requests by reason (error code)",
                ["reason"],
                registry=registry,
            ),
            registrations=Counter("auth_registrations_total", "Users registered", registry=registry),
            password_hash_seconds=Histogram(
                "auth_password_hash_seconds",
                "Time of one bcrypt hash or check, in the worker thread",
                buckets=_HASH_BUCKETS,
                registry=registry,
            ),
            password_hash_in_flight=Gauge(
                "auth_password_hash_in_flight",
                "Password hashes queued or running",
                registry=registry,
            ),
        )

    def track_in_flight(self, read: Callable[[], int]) -> None:
        self.password_hash_in_flight.set_function(lambda: float(read()))
