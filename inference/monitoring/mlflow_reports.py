"""Drift reports as artifacts of the version's MLflow run (`monitoring/<check>.json`), when
the app has MLFLOW_TRACKING_URI: the run's page shows how its model does after release.

The run is the one the trainer recorded for the version (its progress record's
mlflow_run_id). One background thread, a bounded queue: MLflow down or slow never delays
a check or a prediction; a failure is said once and the report stays in the store.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable

from trainer.contract.lifecycle.monitoring import DriftReport

log = logging.getLogger(__name__)
QUEUE_LIMIT = 64
ARTIFACT_DIR = "monitoring"


class ReportArtifacts:
    def __init__(self, uri: str, run_of: Callable[[str, str], str | None]):
        """``run_of(model, version)``: the version's MLflow run id, or None."""
        from trainer.tracking.tracker import MLFLOW_HTTP_DEFAULTS

        for key, value in MLFLOW_HTTP_DEFAULTS.items():
            os.environ.setdefault(key, value)  # one slow request, not minutes of retries
        self.uri, self.run_of = uri, run_of
        self._queue: queue.Queue = queue.Queue(maxsize=QUEUE_LIMIT)
        self._failing = False
        self._thread = threading.Thread(target=self._run, name="monitoring-mlflow", daemon=True)
        self._thread.start()

    def add(self, report: DriftReport, report_id: str) -> None:
        try:
            self._queue.put_nowait((report, report_id))
        except queue.Full:
            log.debug("monitoring: MLflow is behind; report %s stays in the store only",
                      report_id)

    def _run(self) -> None:
        from mlflow import MlflowClient

        client = MlflowClient(self.uri)
        while True:
            item = self._queue.get()
            if item is None:
                return
            report, report_id = item
            try:
                run_id = self.run_of(report.model, report.version)
                if run_id is None:
                    continue
                client.log_text(run_id, report.to_json().decode(),
                                f"{ARTIFACT_DIR}/{report_id}.json")
                if self._failing:
                    log.info("monitoring: MLflow takes reports again")
                self._failing = False
            except Exception as e:  # noqa: BLE001 (tracking never stops monitoring)
                if not self._failing:
                    log.warning("monitoring: report %s not logged to MLflow (%s); reports "
                                "stay in the store", report_id, type(e).__name__)
                self._failing = True

    def stop(self) -> None:
        try:
            self._queue.put(None, timeout=1)
        except queue.Full:
            pass
        self._thread.join(timeout=5)
