"""Prometheus metrics. Each app gets its own CollectorRegistry so several apps (tests,
benchmarks) can live in one process without "duplicated timeseries" errors."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

# Paths we label by name; everything else (Gradio's UI, assets, queue) is "ui", so label
# cardinality stays bounded whatever URLs clients invent.
API_PATHS = {"/predict", "/healthz", "/readyz", "/metrics"}


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "trainstack_http_requests", "HTTP requests by endpoint and status code",
            ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram(
            "trainstack_http_request_duration_seconds", "HTTP request latency",
            ["endpoint"], registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.predictions = Counter(
            "trainstack_predictions", "Predictions by predicted class and source",
            ["model_version", "predicted_class", "source"], registry=self.registry)
        self.model_loaded = Gauge(
            "trainstack_model_loaded", "1 while a model is loaded and served",
            registry=self.registry)
        self.model_info = Gauge(
            "trainstack_model_info", "The served model version (value 1 on the current one)",
            ["model", "version"], registry=self.registry)
        self.model_swaps = Counter(
            "trainstack_model_swaps", "Model versions swapped in since start",
            registry=self.registry)

    @staticmethod
    def endpoint(path: str) -> str:
        return path if path in API_PATHS else "ui"

    def observe_request(self, path: str, status: int, seconds: float) -> None:
        endpoint = self.endpoint(path)
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def observe_prediction(self, version: str, label: str, source: str) -> None:
        self.predictions.labels(version, label, source).inc()

    def set_model(self, name: str, version: str) -> None:
        self.model_info.clear()
        self.model_info.labels(name, version).set(1)
        self.model_loaded.set(1)
        self.model_swaps.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
