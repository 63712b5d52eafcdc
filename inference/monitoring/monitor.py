"""Monitoring in the app: each closed window is checked against the served version's
reference, its report kept for the Monitoring tab and its verdict put in /metrics; windows
and reports go to the store.

The store may be slow or down: writes wait in a bounded queue of their own (the oldest
dropped and counted when it is full) and are retried with the next window, on the
recorder's thread, never on a request's.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from inference.monitoring.drift import ALPHA, NoData, check
from inference.monitoring.recorder import Recorder
from inference.monitoring.records import record_id, report_key, window_key
from trainer.contract.errors import StoreError
from trainer.contract.lifecycle.monitoring import DriftReport, PredictionWindow
from trainer.store import Store

log = logging.getLogger(__name__)

PENDING_LIMIT = 256  # windows and reports waiting for the store
REPORTS_KEPT = 200  # per version, for the Monitoring tab
VERSIONS_LABELLED = 2


class MonitoringMetrics:
    """The verdicts in /metrics, labelled by model and version (the served one and the one
    before it: older series are removed, so cardinality stays bounded)."""

    def __init__(self, registry: CollectorRegistry):
        labels = ["model", "version"]
        self.drift = Gauge("trainstack_drift_detected", "1 when the last check of the "
                           "version found drift", labels, registry=registry)
        self.in_a_row = Gauge("trainstack_drift_windows_in_a_row", "Checks in a row that "
                              "found drift", labels, registry=registry)
        self.p_value = Gauge("trainstack_drift_p_value", "Adjusted p-value of each feature's "
                             "test in the last check", [*labels, "feature"], registry=registry)
        self.estimated = Gauge("trainstack_estimated_accuracy", "Mean calibrated confidence "
                               "of the last check's predictions", labels, registry=registry)
        self.test_accuracy = Gauge("trainstack_test_accuracy", "The version's accuracy on its "
                                   "test split", labels, registry=registry)
        self.checks = Counter("trainstack_drift_checks", "Drift checks run", labels,
                              registry=registry)
        self.confidence = Histogram("trainstack_prediction_confidence", "Calibrated "
                                    "confidence of each recorded prediction",
                                    registry=registry,
                                    buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0))
        self.dropped = Counter("trainstack_monitoring_dropped", "Predictions or files "
                               "monitoring had to drop", ["what"], registry=registry)
        self._labelled: deque[tuple[str, str]] = deque(maxlen=VERSIONS_LABELLED)

    def observe_confidence(self, values) -> None:
        for value in values:
            self.confidence.observe(float(value))

    def show(self, report: DriftReport, in_a_row: int) -> None:
        key = (report.model, report.version)
        if key not in self._labelled:
            if len(self._labelled) == self._labelled.maxlen:
                self._forget(*self._labelled[0])
            self._labelled.append(key)
        self.drift.labels(*key).set(int(report.drift))
        self.in_a_row.labels(*key).set(in_a_row)
        self.estimated.labels(*key).set(report.estimated_accuracy)
        self.test_accuracy.labels(*key).set(report.test_accuracy)
        for feature, test in report.tests.items():
            self.p_value.labels(*key, feature).set(test.p_adjusted)
        self.checks.labels(*key).inc()

    def _forget(self, model: str, version: str) -> None:
        for gauge in (self.drift, self.in_a_row, self.estimated, self.test_accuracy,
                      self.checks):
            try:
                gauge.remove(model, version)
            except KeyError:
                pass
        for labels in [k for k in self.p_value._metrics if k[:2] == (model, version)]:
            self.p_value.remove(*labels)


class Monitor:
    def __init__(self, store: Store, registry: CollectorRegistry, *, alpha: float = ALPHA,
                 artifacts: Any = None, **recorder_options: Any):
        """``artifacts``: where reports go besides the store (mlflow_reports.ReportArtifacts)."""
        self.store, self.alpha, self.artifacts = store, alpha, artifacts
        self.metrics = MonitoringMetrics(registry)
        self._pending: deque[tuple[str, bytes]] = deque()
        self._reports: dict[tuple[str, str], deque[DriftReport]] = {}
        self._in_a_row: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self._store_down = False
        dropped = self.metrics.dropped.labels("prediction")
        self.metrics.dropped.labels("file")  # both series exist from the start
        self.recorder = Recorder(self._on_window, on_confidence=self.metrics.observe_confidence,
                                 on_drop=dropped.inc, **recorder_options)

    def __call__(self, version: Any, pixels: Any, probabilities: list[float]) -> None:
        """The engine's observer: hands the prediction to the recorder (O(1))."""
        self.recorder(version, pixels, probabilities)

    def reports(self, model: str, version: str) -> list[DriftReport]:
        with self._lock:
            return list(self._reports.get((model, version), ()))

    def dropped_predictions(self) -> int:
        return self.recorder.dropped

    def _on_window(self, version: Any, window: PredictionWindow) -> None:
        self._queue(window_key(window), window.to_json())
        reference = self.recorder.reference(version)
        try:
            report = check(reference, [window], model=window.model, version=window.version,
                           alpha=self.alpha)
        except NoData as e:
            log.info("monitoring: %s", e)
        else:
            key = (report.model, report.version)
            with self._lock:
                self._in_a_row[key] = self._in_a_row.get(key, 0) + 1 if report.drift else 0
                self._reports.setdefault(key, deque(maxlen=REPORTS_KEPT)).append(report)
                in_a_row = self._in_a_row[key]
            self.metrics.show(report, in_a_row)
            log.info("monitoring: %s %s: %s%s", report.model, report.version, report.verdict(),
                     f" (fired: {', '.join(report.fired)})" if report.fired else "")
            report_id = record_id(self.recorder.replica)
            self._queue(report_key(report, self.recorder.replica, report_id), report.to_json())
            if self.artifacts is not None:
                self.artifacts.add(report, report_id)
        self._write_pending()

    def _queue(self, key: str, data: bytes) -> None:
        if len(self._pending) >= PENDING_LIMIT:
            self._pending.popleft()
            self.metrics.dropped.labels("file").inc()
        self._pending.append((key, data))

    def _write_pending(self) -> None:
        while self._pending:
            key, data = self._pending[0]
            try:
                self.store.put_bytes(key, data)
            except StoreError as e:
                if not self._store_down:
                    log.warning("monitoring: the store refused %s (%s); windows and reports "
                                "wait (at most %d) and are written when it is back", key, e,
                                PENDING_LIMIT)
                self._store_down = True
                return
            self._pending.popleft()
            if self._store_down:
                log.info("monitoring: the store is back; writing what waited")
                self._store_down = False

    def stop(self) -> None:
        self.recorder.flush()
        self.recorder.stop()
        if self.artifacts is not None:
            self.artifacts.stop()
