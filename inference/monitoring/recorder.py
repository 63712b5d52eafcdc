"""What the app saw: every prediction's summary, gathered into bounded windows.

The request path only hands over what it already has (the version, the decoded pixels, the
probabilities) to a bounded queue: O(1), never waiting. When the queue is full (the
recorder fell behind), the prediction is not recorded and counted as dropped. One thread
summarises (trainer.data.summaries on the pixels, confidences calibrated with the version's
fitted temperature) and closes a window every ``window_size`` predictions or
``window_seconds``, whichever comes first; ``on_window`` gets each closed window.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from scipy.special import log_softmax, softmax

from trainer.contract.errors import MetaError
from trainer.contract.lifecycle.monitoring import (
    CONFIDENCE,
    ENTROPY,
    MAX_WINDOW_PREDICTIONS,
    PredictionWindow,
    Reference,
)
from trainer.data.summaries import summarize

log = logging.getLogger(__name__)

WINDOW_SIZE = 256
WINDOW_SECONDS = 60.0
INBOX_LIMIT = 4096
# The recorder works in batches: per prediction, a numpy call costs about what a whole
# batch's does, and on a saturated CPU every microsecond here is one the predictions lack
# (bench/drift.py measures the overhead).
BATCH_WAIT_S = 0.05
REFERENCES_KEPT = 3


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def replica_name() -> str:
    """This app process in window names: the pod's name (its hostname) and a random part,
    so replicas, and restarts of one, never write the same key."""
    host = "".join(c if c.isalnum() or c in "-." else "-" for c in socket.gethostname())
    return f"{host[:40] or 'app'}-{uuid.uuid4().hex[:6]}"


@dataclass
class _Open:
    """A window being filled."""

    reference: Reference
    started_at: str
    opened: float
    n: int = 0
    labels: list[np.ndarray] = field(default_factory=list)
    samples: dict[str, list[np.ndarray]] = field(default_factory=dict)


class Recorder:
    def __init__(self, on_window: Callable[[Any, PredictionWindow], None], *,
                 window_size: int = WINDOW_SIZE, window_seconds: float = WINDOW_SECONDS,
                 inbox_limit: int = INBOX_LIMIT, replica: str | None = None,
                 on_confidence: Callable[[np.ndarray], None] | None = None,
                 on_drop: Callable[[], None] | None = None):
        if not 1 <= window_size <= MAX_WINDOW_PREDICTIONS:
            raise ValueError(f"window_size must be 1 to {MAX_WINDOW_PREDICTIONS}")
        self.on_window, self.on_confidence, self.on_drop = on_window, on_confidence, on_drop
        self.window_size, self.window_seconds = window_size, window_seconds
        self.replica = replica or replica_name()
        self.dropped = 0
        self._inbox: queue.Queue = queue.Queue(maxsize=inbox_limit)
        self._open: dict[tuple[str, str], _Open] = {}
        self._versions: dict[tuple[str, str], Any] = {}
        self._references: OrderedDict[tuple[str, str], Reference | None] = OrderedDict()
        self._references_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="monitoring", daemon=True)
        self._thread.start()

    # -- the request path ---------------------------------------------------------------
    def __call__(self, version: Any, pixels: np.ndarray, probabilities: list[float]) -> None:
        try:
            self._inbox.put_nowait((version, pixels, probabilities))
        except queue.Full:
            self.dropped += 1
            if self.on_drop:
                self.on_drop()

    # -- the recorder thread ------------------------------------------------------------
    def reference(self, version: Any) -> Reference | None:
        """The version's reference, read once; None (said once) for a version without."""
        key = (version.name, version.version)
        with self._references_lock:  # the recorder's thread and the UI's ask
            if key not in self._references:
                self._references[key] = _read_reference(version)
                while len(self._references) > REFERENCES_KEPT:
                    self._references.popitem(last=False)
            return self._references[key]

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                items = [self._inbox.get(timeout=0.5)]
            except queue.Empty:
                items = []
            if items and not isinstance(items[0], threading.Event):
                self._stop.wait(BATCH_WAIT_S)  # let a batch gather
            while items:
                try:
                    items.append(self._inbox.get_nowait())
                except queue.Empty:
                    break
            flushes = [item for item in items if isinstance(item, threading.Event)]
            try:
                self._add([item for item in items if not isinstance(item, threading.Event)])
                self._close_due(float("inf") if flushes else time.monotonic())
            except Exception:  # monitoring must never take the app down
                log.exception("monitoring: could not record %d prediction(s)", len(items))
            for done in flushes:
                done.set()

    def _add(self, items: list[tuple[Any, np.ndarray, list[float]]]) -> None:
        by_version: dict[tuple[str, str], list] = {}
        for version, pixels, probabilities in items:
            key = (version.name, version.version)
            self._versions[key] = version
            by_version.setdefault(key, []).append((pixels, probabilities))
        for key, seen in by_version.items():
            reference = self.reference(self._versions[key])
            if reference is not None:
                self._summarise(key, reference, seen)

    def _summarise(self, key: tuple[str, str], reference: Reference, seen: list) -> None:
        probabilities = np.asarray([p for _, p in seen], dtype=np.float64)
        # softmax(log p / T) = softmax(logits / T); log_softmax first renormalises a bf16
        # program's probabilities, which need not sum to exactly 1.
        calibrated = softmax(log_softmax(np.log(np.clip(probabilities, 1e-12, 1.0)), axis=1)
                             / reference.temperature, axis=1)
        features = {CONFIDENCE: calibrated.max(axis=1),
                    ENTROPY: -(calibrated * np.log(np.clip(calibrated, 1e-12, 1.0))).sum(axis=1),
                    **summarize(np.stack([pixels for pixels, _ in seen]))}
        labels = calibrated.argmax(axis=1)
        if self.on_confidence:
            self.on_confidence(features[CONFIDENCE])
        start = 0
        while start < len(seen):  # the batch, cut where windows fill
            window = self._open.get(key)
            if window is None:
                window = self._open[key] = _Open(reference, utc_now(), time.monotonic())
            end = min(len(seen), start + self.window_size - window.n)
            window.labels.append(labels[start:end])
            for name, values in features.items():
                window.samples.setdefault(name, []).append(values[start:end])
            window.n += end - start
            start = end
            if window.n >= self.window_size:
                self._close(key)

    def _close_due(self, now: float) -> None:
        for key in [k for k, w in self._open.items() if now - w.opened >= self.window_seconds]:
            self._close(key)

    def _close(self, key: tuple[str, str]) -> None:
        window = self._open.pop(key)
        name, version = key
        closed = PredictionWindow(
            model=name, version=version, replica=self.replica, started_at=window.started_at,
            ended_at=utc_now(),
            class_counts=np.bincount(np.concatenate(window.labels),
                                     minlength=len(window.reference.classes)).tolist(),
            samples={name: np.round(np.concatenate(chunks), 6).tolist()
                     for name, chunks in window.samples.items()})
        self.on_window(self._versions[key], closed)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Record everything handed over so far and close every open window (tests,
        shutdown); False if the recorder did not get there within ``timeout_s``."""
        done = threading.Event()
        try:
            self._inbox.put(done, timeout=timeout_s)
        except queue.Full:
            return False
        return done.wait(timeout_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)


def _read_reference(version: Any) -> Reference | None:
    name = version.meta.reference
    path = version.file(name) if name else None
    if path is None:
        log.warning("monitoring: %s version %s has no reference (published before monitoring "
                    "existed): its predictions are served but not checked for drift",
                    version.name, version.version)
        return None
    try:
        return Reference.from_json(path.read_bytes())
    except (OSError, MetaError) as e:
        log.warning("monitoring: %s version %s: its reference cannot be read (%s): its "
                    "predictions are served but not checked for drift", version.name,
                    version.version, e)
        return None
