"""Rank 0's progress on its own training job (trainer.contract.reporting.job_status), never in the way.

The loop hands this the run's progress (a fraction of every epoch's samples) after each
step and the last epoch's record after each epoch: an assignment under a lock, nothing
more. One daemon thread sends the newest to the status server (a TrainJob) or as the job's
annotation (a PyTorchJob) at most every ``REPORT_EVERY_S``, at once after an epoch, each
request with a ``TIMEOUT_S`` timeout and no retry: the next report is the retry. A failure
is logged once as a warning (then at debug level) and training goes on; a server that
hangs holds the thread, never the loop. Without the environment of either, nothing runs.
"""

from __future__ import annotations

import json
import logging
import os
import ssl
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from trainer.contract.reporting import job_status as contract
from trainer.contract.reporting.job_status import JobProgress

log = logging.getLogger(__name__)

REPORT_EVERY_S = 10.0
TIMEOUT_S = 5.0
CLOSE_WAIT_S = 5.0  # for the last report, at the end of the run


class Sender:
    """One HTTPS request with the pod's token, trusting only the given CA."""

    method = "POST"
    content_type = "application/json"

    def __init__(self, url: str, ca_file: str, token_file: str):
        self.url, self.ca_file, self.token_file = url, ca_file, token_file

    def body(self, progress: JobProgress) -> bytes:
        return json.dumps(contract.trainer_status_request(progress)).encode()

    def send(self, progress: JobProgress) -> None:
        # Read each time: the kubelet rotates a projected token and the CA it mounts.
        token = Path(self.token_file).read_text().strip()
        request = urllib.request.Request(
            self.url, data=self.body(progress), method=self.method,
            headers={"Content-Type": self.content_type, "Authorization": f"Bearer {token}"})
        context = ssl.create_default_context(cafile=self.ca_file)
        with urllib.request.urlopen(request, timeout=TIMEOUT_S, context=context) as answer:
            answer.read()


class AnnotationSender(Sender):
    """A JSON merge patch of the job's PROGRESS_ANNOTATION, as the API server takes it."""

    method = "PATCH"
    content_type = "application/merge-patch+json"

    def body(self, progress: JobProgress) -> bytes:
        value = contract.progress_annotation(progress)
        return json.dumps({"metadata": {"annotations": {
            contract.PROGRESS_ANNOTATION: value}}}).encode()


def sender_from_env(env=os.environ) -> Sender | None:
    """Trainer's status server when its variables are set, else the PyTorchJob's annotation
    when the stack named the job, else None (nothing to report to)."""
    url = env.get(contract.TRAINER_SERVER_URL_ENV)
    if url:
        return Sender(url, env.get(contract.TRAINER_SERVER_CA_ENV, ""),
                      env.get(contract.TRAINER_SERVER_TOKEN_ENV, ""))
    job, credentials = env.get(contract.PROGRESS_JOB_ENV), env.get(contract.API_CREDENTIALS_ENV)
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
    if job and credentials and host and port:
        host = f"[{host}]" if ":" in host else host  # an IPv6 cluster
        return AnnotationSender(f"https://{host}:{port}{job}", f"{credentials}/ca.crt",
                                f"{credentials}/token")
    return None


class JobStatus:
    """See the module docstring. ``progressed`` and ``epoch_ended`` are the loop's calls."""

    def __init__(self, sender: Sender, epochs: int, clock=time.monotonic):
        self.sender, self.epochs, self.clock = sender, epochs, clock
        self._lock = threading.Lock()
        self._wake = threading.Event()  # something new to report
        self._urgent = threading.Event()  # ... that must not wait for REPORT_EVERY_S
        self._closing = False
        self._fraction, self._epoch, self._record = 0.0, 0, None
        self._pace: tuple[float, float] | None = None  # (clock, fraction) when first seen
        self._sent_at: float | None = None
        self._failures = 0
        self._thread = threading.Thread(target=self._run, name="job-status", daemon=True)
        self._thread.start()

    # The loop's calls: no I/O, no waiting -------------------------------------------
    def progressed(self, fraction: float) -> None:
        with self._lock:
            self._fraction = fraction
            if self._pace is None:
                self._pace = (self.clock(), fraction)
        self._wake.set()

    def epoch_ended(self, epoch: int, record) -> None:
        with self._lock:
            self._epoch, self._record = epoch, record
            self._fraction = max(self._fraction, epoch / self.epochs)
            self._sent_at = None  # an epoch's result goes out at once
        self._urgent.set()
        self._wake.set()

    def close(self, wait_s: float = CLOSE_WAIT_S) -> None:
        """The newest progress goes out once more (bounded); the thread ends."""
        with self._lock:
            self._closing, self._sent_at = True, None
        self._urgent.set()
        self._wake.set()
        self._thread.join(timeout=wait_s)

    # The thread ---------------------------------------------------------------------
    def snapshot(self) -> JobProgress:
        with self._lock:
            fraction, epoch, record, pace = self._fraction, self._epoch, self._record, self._pace
        eta = None
        if pace is not None and fraction > pace[1] and fraction < 1:
            rate = (fraction - pace[1]) / max(1e-9, self.clock() - pace[0])
            eta = int((1 - fraction) / rate)
        return JobProgress(
            percent=max(0, min(100, int(fraction * 100))), eta_seconds=eta, epoch=epoch,
            epochs=self.epochs, test_accuracy=record.test_acc if record else None,
            test_loss=record.test_loss if record else None,
            updated=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))

    def _run(self) -> None:
        while True:
            self._wake.wait()
            with self._lock:
                closing, sent_at = self._closing, self._sent_at
                due = 0.0 if sent_at is None else sent_at + REPORT_EVERY_S - self.clock()
                if due <= 0 or closing:
                    self._sent_at = self.clock()
            if due > 0 and not closing:
                self._urgent.wait(due)  # an epoch's end or the close cuts it short
                self._urgent.clear()
                continue
            self._wake.clear()
            self._send(self.snapshot())
            if closing:
                return

    def _send(self, progress: JobProgress) -> None:
        try:
            self.sender.send(progress)
            if self._failures:
                log.info("the job's progress reaches %s again", self.sender.url)
            self._failures = 0
        except Exception as e:  # noqa: BLE001 - informational: never worth stopping training for
            self._failures += 1
            level = logging.WARNING if self._failures == 1 else logging.DEBUG
            log.log(level, "the job's progress was not reported to %s (%s); training goes "
                    "on and reports again", self.sender.url, describe(e))


def describe(error: Exception) -> str:
    """An error in one short phrase, without the server's whole answer."""
    status = getattr(error, "code", None)
    return f"HTTP {status}" if status else f"{type(error).__name__}: {error}"[:200]


def open_job_status(epochs: int, env=os.environ) -> JobStatus | None:
    sender = sender_from_env(env)
    return JobStatus(sender, epochs) if sender is not None else None
