"""Experiment tracking with MLflow, when ``MLFLOW_TRACKING_URI`` is set; never in the way.

Rank 0 hands the :class:`Tracker` what the run did (its start, each epoch's records, the
published version); every MLflow call runs in one background thread that the training
loop waits for at most ``TRAINSTACK_TRACKING_TIMEOUT_S`` seconds (publication: ten times
that, it uploads the model). A failure or a timeout is logged once as a warning and
training goes on; the next epoch tries again and back-fills every epoch MLflow has not
got yet, so the run's metrics end up complete once the server answers again. While an
earlier call still hangs, an epoch does not wait at all.

Nothing here imports mlflow: :mod:`trainer.tracking.mlflow_run` does, in the background thread,
and only when tracking is on. Stdlib only.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from trainer.contract.env import TRACKING_URI_ENV
from trainer.contract.errors import ConfigError
from trainer.contract.reporting.mlflow_layout import METRIC_KEYS, RunInfo
from trainer.contract.reporting.progress import mlflow_run_page
from trainer.contract.schema import EpochRecord
from trainer.contract.urls import display_url, redact_urls

log = logging.getLogger(__name__)

TIMEOUT_ENV = "TRAINSTACK_TRACKING_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 10.0
PUBLISH_TIMEOUT_FACTOR = 10
# MLflow's own HTTP client: one request may take this long, retried once (its defaults,
# 120 s and 7 retries with exponential backoff, would hold the background thread for
# many minutes). Set only where the environment does not set them.
MLFLOW_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
                        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
                        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
# The client would also report usage to MLflow's telemetry service on the internet: a
# connection the training pods have no business making. Set it to false to allow it.
MLFLOW_TELEMETRY_DEFAULT = {"MLFLOW_DISABLE_TELEMETRY": "true"}


def tracking_uri() -> str | None:
    return os.environ.get(TRACKING_URI_ENV) or None


def tracking_timeout() -> float:
    raw = os.environ.get(TIMEOUT_ENV)
    if raw is None:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not 0 < value < math.inf:
        raise ConfigError(f"{TIMEOUT_ENV}: must be a number of seconds > 0, got {raw!r}",
                          key=TIMEOUT_ENV)
    return value


class _Background:
    """One call at a time in a daemon thread; the caller waits for it up to a deadline.

    A daemon thread: a call stuck in a dead connection never holds the process at exit.
    """

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None

    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait(self, seconds: float) -> bool:
        """Wait for the running call (if any); whether none is running now."""
        if self._thread is not None:
            self._thread.join(max(0.0, seconds))
        return not self.busy()

    def run(self, job: Callable[[], None], seconds: float) -> bool:
        """Start ``job`` and wait up to ``seconds``; whether it finished in time."""
        self._thread = threading.Thread(target=job, name="mlflow-tracking", daemon=True)
        self._thread.start()
        return self.wait(seconds)


@dataclass
class _Progress:
    """What the MLflow run holds, as far as this process knows (guarded by a lock)."""

    run_id: str | None = None
    experiment_id: str | None = None
    logged: set[tuple[str, int]] = field(default_factory=set)
    """(metric, epoch) pairs the MLflow run has."""
    stamps: dict[int, int] = field(default_factory=dict)
    """Epoch -> the ms timestamp its metrics were first sent with: a resend is identical,
    so the server drops it if the first send did arrive (MLflow's SQL store ignores a
    metric with the same key, step, timestamp and value)."""
    stale: bool = True
    """Re-read ``logged`` from the server before logging (at start, after a failure)."""


class Tracker:
    """Rank 0's MLflow run for one trainstack run; see the module docstring."""

    def __init__(self, info: RunInfo, uri: str, *, timeout_s: float | None = None):
        self.info, self.uri = info, uri
        # What log lines say: the URI may carry basic-auth credentials (trainer.contract.urls).
        self.shown_uri = display_url(uri)
        self.timeout_s = tracking_timeout() if timeout_s is None else timeout_s
        self._client: Any = None
        self._progress = _Progress()
        self._lock = threading.Lock()
        self._background = _Background()
        self._failing = False
        self._resuming = False
        # World sizes: only one that trained an epoch is named (trainstack.world_sizes).
        self._trained_here = False
        self._size_noted = False
        # Before mlflow is imported (in the background thread): it reads them then.
        for key, value in {**MLFLOW_HTTP_DEFAULTS, **MLFLOW_TELEMETRY_DEFAULT}.items():
            os.environ.setdefault(key, value)

    # What the training loop calls (rank 0) ------------------------------------------
    def start(self, mlflow_run_id: str | None, history: list[EpochRecord]) -> None:
        """The run (re)starts after ``history``; ``mlflow_run_id`` from its checkpoint."""
        with self._lock:
            self._progress.run_id = mlflow_run_id
        self._resuming = bool(history)
        self._submit(lambda: self._sync(list(history)), self.timeout_s)

    def epoch_ended(self, history: list[EpochRecord]) -> None:
        """After an epoch's checkpoint: log every epoch of ``history`` MLflow lacks."""
        self._trained_here = True  # this process's world size trained an epoch
        if self._background.busy():
            log.debug("MLflow still busy with an earlier call: epoch %d waits for the next",
                      history[-1].epoch if history else 0)
            return
        self._submit(lambda: self._sync(list(history)), self.timeout_s)

    def published(self, version: str, history: list[EpochRecord],
                  files: Callable[[], dict[str, bytes]], latest: Callable[[], str | None]) -> None:
        """After publication: back-fill ``history``, upload ``files()`` as the run's
        artifacts, register ``version``, point the alias at what ``latest()`` (latest.json)
        names, end the run. Safe to repeat (a restart of a published run)."""
        deadline = time.monotonic() + self.timeout_s * PUBLISH_TIMEOUT_FACTOR
        if not self._background.wait(deadline - time.monotonic()):
            self._failed_once(TimeoutError("an earlier call still hangs: the published "
                                           "version is not reported"))
            return

        def job() -> None:
            self._sync(list(history), version=version)
            self._client.publish(self._progress.run_id, self.info, version, files(), latest)

        self._submit(job, deadline - time.monotonic())

    @property
    def run_id(self) -> str | None:
        with self._lock:
            return self._progress.run_id

    @property
    def experiment_id(self) -> str | None:
        with self._lock:
            return self._progress.experiment_id

    def run_url(self) -> str | None:
        run_id, experiment = self.run_id, self.experiment_id
        if not run_id or not experiment:
            return None
        return mlflow_run_page(self.uri, experiment, run_id)

    def wait_idle(self, seconds: float) -> bool:
        """For tests and the end of a run: whether the background call has finished."""
        return self._background.wait(seconds)

    # The background side ------------------------------------------------------------
    def _submit(self, job: Callable[[], None], seconds: float) -> None:
        if not self._background.run(lambda: self._attempt(job), seconds):
            # Not a failure yet: the call goes on in the background, bounded by MLflow's
            # HTTP timeouts; it warns if it fails.
            level = logging.DEBUG if self._failing else logging.INFO
            log.log(level, "MLflow at %s has not answered within %.0f s: training goes on "
                    "without waiting", self.shown_uri, seconds)

    def _attempt(self, job: Callable[[], None]) -> None:
        try:
            job()
        except Exception as e:  # noqa: BLE001 (tracking must never stop training)
            with self._lock:
                self._progress.stale = True
            self._failed_once(e)
            return
        with self._lock:
            recovered, self._failing = self._failing, False
        if recovered:
            log.warning("MLflow at %s answers again: run %s is up to date", self.shown_uri,
                        self.run_id)

    def _failed_once(self, error: BaseException) -> None:
        with self._lock:
            first, self._failing = not self._failing, True
        if first:
            log.warning("MLflow at %s failed (%s: %s); training goes on, the epochs MLflow "
                        "misses are logged once it answers again", self.shown_uri,
                        type(error).__name__, redact_urls(str(error))[:300])
        else:
            log.debug("MLflow still failing: %s", redact_urls(str(error)))

    def _connect(self) -> Any:
        if self._client is None:
            from trainer.tracking.mlflow_run import MlflowRuns  # mlflow is imported only here

            self._client = MlflowRuns(self.uri)
        return self._client

    def _sync(self, history: list[EpochRecord], version: str | None = None) -> None:
        """Open (or find) the MLflow run, then log the epochs of ``history`` it lacks
        (``version``: the run is published as that version)."""
        client = self._connect()
        progress = self._progress
        if progress.run_id is None or progress.experiment_id is None:
            run_id, experiment_id = client.open_run(
                self.info, known=progress.run_id, resuming=self._resuming or version is not None,
                version=version)
            with self._lock:
                progress.run_id, progress.experiment_id = run_id, experiment_id
                progress.stale = True
        if progress.stale:
            logged = client.logged_steps(progress.run_id, METRIC_KEYS)
            with self._lock:
                progress.logged, progress.stale = logged, False
        now_ms = int(time.time() * 1000)
        missing = []
        for record in history:
            stamp = progress.stamps.setdefault(record.epoch, now_ms)
            for key in METRIC_KEYS:
                if (key, record.epoch) not in progress.logged:
                    missing.append((key, getattr(record, key), stamp, record.epoch))
        if not self._size_noted and (self._trained_here or version is not None):
            # A job that trained nothing (a published run re-run with more workers, a
            # start that died before its first epoch) adds no world size; at publication
            # (info.world_size is then the one that trained) only where none is named.
            client.note_world_size(progress.run_id, self.info.world_size,
                                   only_if_none=not self._trained_here)
            self._size_noted = True
        if missing:
            client.log_metrics(progress.run_id, missing)
            with self._lock:
                progress.logged.update((key, step) for key, _, _, step in missing)
            epochs = sorted({step for *_, step in missing})
            log.info("MLflow run %s: logged epoch(s) %s", progress.run_id,
                     ", ".join(map(str, epochs)))
