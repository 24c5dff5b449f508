"""Prometheus metrics of one loom server (`GET /metrics`), in a registry of its own.

Each server gets its own `CollectorRegistry`, not prometheus_client's global one, so several
servers in one process (tests, notebooks) do not clash. Throughput is exported as counters
(`loom_texts_total`, `loom_tokens_total`: Prometheus' `rate()` turns them into texts/s and
tokens/s) plus a gauge with the texts (or prompts) per second of the last model call.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class ServerMetrics:
    """Requests by route and status, latency, model batch sizes and time, texts and tokens,
    queue depth and requests in flight, for one server."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, server: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = {"server": server}
        r = self.registry
        self.requests = Counter(
            "loom_requests",
            "HTTP requests answered, by route and status code",
            ["route", "status"],
            registry=r,
        ).labels  # called as metrics.requests(route, status)
        self.latency = Histogram(
            "loom_request_seconds",
            "Time from request to response, by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        ).labels
        self.batch_size = Histogram(
            "loom_batch_size",
            "Items (texts or prompts) per model call after merging concurrent requests",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.batch_requests = Histogram(
            "loom_batch_requests",
            "Requests merged into one model call",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.model_seconds = Histogram(
            "loom_model_seconds", "Time of one model call", buckets=LATENCY_BUCKETS, registry=r
        )
        self.texts = Counter("loom_texts", "Texts or prompts processed by the model", registry=r)
        self.tokens = Counter(
            "loom_tokens", "Tokens processed (prompt and completion)", ["kind"], registry=r
        ).labels
        self.items_per_second = Gauge(
            "loom_items_per_second",
            "Texts or prompts per second of the last model call",
            registry=r,
        )
        self.queue_depth = Gauge("loom_queue_depth", "Requests waiting for the model", registry=r)
        self.in_flight = Gauge("loom_requests_in_flight", "Requests being handled", registry=r)
        self.rejected = Counter(
            "loom_rejected", "Requests refused before the model, by reason", ["reason"], registry=r
        ).labels
        info = Gauge("loom_server_info", "Which loom server this is", ["server"], registry=r)
        info.labels(**labels).set(1)

    def render(self) -> bytes:
        """The metrics in Prometheus' text exposition format."""
        return generate_latest(self.registry)
