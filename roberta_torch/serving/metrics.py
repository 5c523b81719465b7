"""The server's Prometheus metrics, in a registry of its own (one per app, so tests and
several apps in one process do not share counters).

    roberta_torch_requests_total{route, status}           requests answered, by HTTP status
    roberta_torch_request_duration_seconds{route}         time from arrival to response
    roberta_torch_inputs_total{route}                     texts (embeddings) / documents (rerank)
    roberta_torch_tokens_total{route}                     tokens computed (after truncation)
    roberta_torch_queue_rows, roberta_torch_queue_tokens  waiting for the model now
    roberta_torch_queue_wait_seconds{model}               arrival in the queue -> first row computed
    roberta_torch_batch_rows{model}, _batch_tokens{model} size of each model call
    roberta_torch_batch_duration_seconds{model}           time of each model call

With several `--workers`, each worker process reports its own (a scrape reaches one of them).
"""

from __future__ import annotations

from .. import optional


def _import_prometheus_client():
    return optional.require("prometheus_client", "The server's /metrics", install="'roberta_torch[serve]'")


LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
TOKEN_BUCKETS = (16, 64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072)


class ServerMetrics:
    def __init__(self):
        prometheus = _import_prometheus_client()
        self._prometheus = prometheus
        self.registry = registry = prometheus.CollectorRegistry()
        self.requests = prometheus.Counter(
            "roberta_torch_requests", "Requests answered, by route and HTTP status.", ["route", "status"],
            registry=registry)
        self.request_seconds = prometheus.Histogram(
            "roberta_torch_request_duration_seconds", "Time from a request's arrival to its response.", ["route"],
            buckets=LATENCY_BUCKETS, registry=registry)
        self.inputs = prometheus.Counter(
            "roberta_torch_inputs", "Texts embedded / documents reranked.", ["route"], registry=registry)
        self.tokens = prometheus.Counter(
            "roberta_torch_tokens", "Tokens computed (special tokens included, after truncation).", ["route"],
            registry=registry)
        self.queue_rows = prometheus.Gauge(
            "roberta_torch_queue_rows", "Texts / pairs waiting for the model.", registry=registry)
        self.queue_tokens = prometheus.Gauge(
            "roberta_torch_queue_tokens", "Tokens waiting for the model.", registry=registry)
        self.queue_wait = prometheus.Histogram(
            "roberta_torch_queue_wait_seconds", "Time from entering the queue to the first row computed.", ["model"],
            buckets=LATENCY_BUCKETS, registry=registry)
        self.batch_rows = prometheus.Histogram(
            "roberta_torch_batch_rows", "Texts / pairs in one model call.", ["model"], buckets=SIZE_BUCKETS,
            registry=registry)
        self.batch_tokens = prometheus.Histogram(
            "roberta_torch_batch_tokens", "Tokens in one model call.", ["model"], buckets=TOKEN_BUCKETS,
            registry=registry)
        self.batch_seconds = prometheus.Histogram(
            "roberta_torch_batch_duration_seconds", "Time of one model call.", ["model"], buckets=LATENCY_BUCKETS,
            registry=registry)

    # Called from the model worker thread (prometheus_client's metrics are thread-safe).

    def set_queue(self, rows: int, tokens: int) -> None:
        self.queue_rows.set(rows)
        self.queue_tokens.set(tokens)

    def observe_queue_wait(self, model: str, seconds: float) -> None:
        self.queue_wait.labels(model).observe(seconds)

    def observe_batch(self, model: str, rows: int, tokens: int, seconds: float) -> None:
        self.batch_rows.labels(model).observe(rows)
        self.batch_tokens.labels(model).observe(tokens)
        self.batch_seconds.labels(model).observe(seconds)

    # Called from the event loop.

    def observe_request(self, route: str, status: int, seconds: float, inputs: int = 0, tokens: int = 0) -> None:
        self.requests.labels(route, str(status)).inc()
        self.request_seconds.labels(route).observe(seconds)
        if inputs:
            self.inputs.labels(route).inc(inputs)
        if tokens:
            self.tokens.labels(route).inc(tokens)

    def render(self) -> tuple[bytes, str]:
        """(body, content type) of Prometheus' text exposition format."""
        return self._prometheus.generate_latest(self.registry), self._prometheus.CONTENT_TYPE_LATEST
