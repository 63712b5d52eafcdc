"""Prometheus metrics. Each app gets its own CollectorRegistry so several apps (tests,
benchmarks) can live in one process without "duplicated timeseries" errors.

Label cardinality is bounded: endpoints are a fixed set, and predictions are labelled by
version only for the served version and the one before it (older series are removed at
each swap; a late answer from an older version counts under ``model_version="older"``).
"""

from __future__ import annotations

import threading
from collections import deque

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from inference.serving.batcher import BatchRecord

# Paths we label by name; everything else (Gradio's UI, assets, queue) is "ui", so label
# cardinality stays bounded whatever URLs clients invent.
API_PATHS = {"/predict", "/healthz", "/readyz", "/metrics"}
VERSIONS_LABELLED = 2  # the served version and the one before it
OLDER = "older"
BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
WAITS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


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
            "trainstack_predictions", "Predictions by model version (the served one and "
            "the one before; older ones as 'older'), predicted class and source",
            ["model_version", "predicted_class", "source"], registry=self.registry)
        self.model_loaded = Gauge(
            "trainstack_model_loaded", "1 while a model is loaded and served",
            registry=self.registry)
        self.model_info = Gauge(
            "trainstack_model_info", "The served model version (value 1 on the current one)",
            ["model", "version"], registry=self.registry)
        self.model_precision = Gauge(
            "trainstack_model_precision", "Precision of the served forward pass (value 1)",
            ["precision"], registry=self.registry)
        self.model_program = Gauge(
            "trainstack_model_program", "How the forward pass runs: frozen or eager (value 1)",
            ["program"], registry=self.registry)
        self.model_swaps = Counter(
            "trainstack_model_swaps", "Model versions swapped in since start",
            registry=self.registry)
        self.batch_size = Histogram(
            "trainstack_batch_size", "Requests answered by one forward pass",
            registry=self.registry, buckets=BATCH_SIZES)
        self.queue_wait = Histogram(
            "trainstack_batch_queue_wait_seconds",
            "Time a decoded request waited for its batch to start", registry=self.registry,
            buckets=WAITS)
        self.forward = Histogram(
            "trainstack_batch_forward_seconds", "Time of one batched forward pass",
            registry=self.registry, buckets=WAITS)
        self.decode_budget = Gauge(
            "trainstack_decode_memory_budget_bytes",
            "Memory budget shared by concurrent image decodes", registry=self.registry)
        self.decode_reserved = Gauge(
            "trainstack_decode_memory_reserved_bytes",
            "Decode memory reserved right now", registry=self.registry)
        self.upload_budget = Gauge(
            "trainstack_upload_memory_budget_bytes",
            "Memory budget shared by POST /predict bodies in flight", registry=self.registry)
        self.upload_reserved = Gauge(
            "trainstack_upload_memory_reserved_bytes",
            "Upload memory reserved right now", registry=self.registry)
        self.threads = Gauge(
            "trainstack_serving_threads", "Threads serving predictions: intra_op (forward "
            "pass), lone_request (a forward pass of a request alone) and decode", ["kind"],
            registry=self.registry)
        self._labelled: deque[str] = deque(maxlen=VERSIONS_LABELLED)
        self._series: dict[str, set[tuple[str, str]]] = {}  # version -> (class, source)
        self._lock = threading.Lock()

    @staticmethod
    def endpoint(path: str) -> str:
        return path if path in API_PATHS else "ui"

    def observe_request(self, path: str, status: int, seconds: float) -> None:
        endpoint = self.endpoint(path)
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def observe_prediction(self, version: str, label: str, source: str) -> None:
        with self._lock:
            if version not in self._labelled:
                version = OLDER
            self._series.setdefault(version, set()).add((label, source))
            self.predictions.labels(version, label, source).inc()

    def observe_batch(self, record: BatchRecord) -> None:
        self.batch_size.observe(record.size)
        for wait in record.queue_waits:
            self.queue_wait.observe(wait)
        self.forward.observe(record.seconds)

    def set_model(self, name: str, version: str, precision: str = "fp32",
                  program: str = "eager") -> None:
        self.model_info.clear()
        self.model_info.labels(name, version).set(1)
        self.model_precision.clear()
        self.model_precision.labels(precision).set(1)
        self.model_program.clear()
        self.model_program.labels(program).set(1)
        self.model_loaded.set(1)
        self.model_swaps.inc()
        with self._lock:
            if version in self._labelled:
                return
            if len(self._labelled) == self._labelled.maxlen:
                dropped = self._labelled[0]
                for label, source in self._series.pop(dropped, set()):
                    self.predictions.remove(dropped, label, source)
            self._labelled.append(version)

    def render(self) -> bytes:
        return generate_latest(self.registry)
