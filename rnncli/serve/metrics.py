"""The server's Prometheus metrics (prometheus_client): requests and errors by endpoint and status,
latency, and the size of every forward pass. Each app has its own registry, so two apps in one
process (as in tests) count apart."""

from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class Metrics:
    def __init__(self, endpoints: set[str]):
        self.endpoints = endpoints  # paths counted by name; any other path counts as "other"
        self.registry = CollectorRegistry()
        self.requests = Counter("rnncli_requests", "HTTP requests answered, by endpoint and status code.",
                                ["endpoint", "status"], registry=self.registry)
        self.errors = Counter("rnncli_errors", "Requests answered with an error: client (4xx) or server (5xx).",
                              ["endpoint", "kind"], registry=self.registry)
        self.latency = Histogram("rnncli_request_seconds", "Time from a request's arrival to its answer.",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch = Histogram("rnncli_batch_texts", "Texts per forward pass (micro-batching joins requests).",
                               buckets=BATCH_BUCKETS, registry=self.registry)
        self.texts = Counter("rnncli_texts", "Texts classified.", registry=self.registry)
        self._children: dict[tuple[str, int], tuple] = {}

    def observe_batch(self, texts: int) -> None:
        self.batch.observe(texts)
        self.texts.inc(texts)

    def record(self, path: str, status: int, seconds: float) -> None:
        endpoint = path if path in self.endpoints else "other"
        counters = self._children.get((endpoint, status))
        if counters is None:  # labels() costs more than the count itself: look each pair up once
            kind = None if status < 400 else self.errors.labels(endpoint, "client" if status < 500 else "server")
            counters = self._children[endpoint, status] = (self.requests.labels(endpoint, str(status)),
                                                            self.latency.labels(endpoint), kind)
        requests, latency, errors = counters
        requests.inc()
        latency.observe(seconds)
        if errors is not None:
            errors.inc()

    def exposition(self) -> tuple[bytes, str]:
        """The text format Prometheus scrapes, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Counts every HTTP request with the status it was answered with, including those refused
    before they reach an endpoint (401, 400 for a bad Host, 413) and our own failures (500)."""

    def __init__(self, app, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), [500]

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.record(scope["path"], status[0], time.perf_counter() - start)
