"""Prometheus metrics of one gateway instance (its own registry), with the seed's names."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

LLM_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2, 4, 8, 15, 30, 60, 120)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)  # process_cpu_seconds_total, process_resident_memory_bytes, ...
        self.requests = Counter(
            "chat_requests_total", "Chat requests by outcome", ["status", "model", "stream"], registry=r
        )
        self.duration = Histogram(
            "chat_request_duration_seconds",
            "Time from request to the last byte of the answer",
            ["stream"],
            buckets=LLM_LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "chat_time_to_first_token_seconds",
            "Time from request to the first token relayed to the client",
            buckets=LLM_LATENCY_BUCKETS,
            registry=r,
        )
        self.active_sessions = Gauge(
            "chat_active_sessions_total",
            "Sessions held in Redis (not yet archived), cluster-wide",
            registry=r,
        )
        self.queue_depth = Gauge(
            "chat_queue_depth",
            "Messages waiting in the request queue (same on every gateway)",
            ["queue"],
            registry=r,
        )
        self.in_flight = Gauge("chat_in_flight_requests", "Chats currently streaming", registry=r)
        self.rejected_busy = Counter(
            "chat_queue_full_rejections_total",
            "Requests shed with 503 because the queue was full",
            registry=r,
        )
        self.replies_dropped = Counter(
            "chat_replies_dropped_total",
            "Replies not delivered: unroutable (the client left), undecodable, mismatched (wrong owner)",
            ["reason"],
            registry=r,
        )
        self.cancels = Counter("chat_cancellations_total", "Cancels published", ["reason"], registry=r)
        self.auth_failures = Counter(
            "gateway_auth_failures_total", "Rejected tokens by reason", ["reason"], registry=r
        )
        self.relay_errors = Counter(
            "chat_stream_errors_total", "Streams that ended with an error, by code", ["error"], registry=r
        )
        self.unhandled = Counter(
            "gateway_unhandled_errors_total",
            "Unexpected exceptions (answered 500), by type",
            ["type"],
            registry=r,
        )
        self.rate_limited = Counter(
            "chat_rate_limited_total", "Requests refused by the rate limiter", ["scope"], registry=r
        )
