"""Retrains as the app shows them: why each started and how each ended.

Three things in the store tell it: the retrain's own record (``models/<name>/retrains/<id>.json``,
trainer.contract.lifecycle.retrain.RetrainRecord, written by the retrain Job's pod: started, skipped,
failed before training, the training job it made), the progress record of the run it
trained (the run carries the retrain's id: epoch k of N, failed), and that run's version's
meta.json (the promotion gate's verdict: promoted or candidate, and why). Reads are bounded
like the progress board's: the records are listed at most every ``refresh_seconds``; the
runs come from the progress board, the verdicts from the registry's meta.json cache.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from trainer.contract.errors import MetaError, ObjectNotFound, StoreError
from trainer.contract.layout import ModelKeys
from trainer.contract.lifecycle.retrain import FAILED, SKIPPED, STARTING, RetrainRecord
from trainer.contract.reporting.progress import RunProgress
from trainer.contract.schema import VersionMeta

log = logging.getLogger(__name__)

REFRESH_SECONDS = 5.0
SHOWN = 50  # the newest retrains listed


def pct(value: float | None) -> str:
    return f"{100 * value:.1f}%" if value is not None else "n/a"


@dataclass(frozen=True)
class RetrainRow:
    """One retrain, joined with its run and its version."""

    record: RetrainRecord
    run: RunProgress | None
    meta: VersionMeta | None
    served: str | None
    """The version the app serves now."""

    @property
    def why(self) -> str:
        """The reason; for drift, the triggering report's id (its key's last part)."""
        report = self.record.report.rsplit("/", 1)[-1].removesuffix(".json")
        return f"drift (report {report})" if report else self.record.reason

    @property
    def outcome(self) -> str:
        """How it ended (or how far it got), in one line."""
        record, run = self.record, self.run
        if record.state in (SKIPPED, FAILED) and (run is None or record.state == SKIPPED):
            return f"{record.state}: {record.message}"
        if run is None:
            return "starting" if record.state == STARTING else f"{record.state}: {record.message}"
        if run.state == "failed":
            return "failed: its training stopped with an error (the job's logs say which)"
        if run.state != "published":
            return f"training: epoch {run.epoch} of {run.epochs} ({run.state})"
        verdict = self.meta.promotion if self.meta else None
        if verdict is None:
            ended = "published (no promotion gate)"
        else:
            ended = f"{verdict.decision}: {verdict.reason}"
        return f"{ended}{' · served now' if run.version == self.served else ''}"

    def cells(self) -> list[str]:
        run = self.run
        return [self.record.requested_at, self.why, self.outcome, run.run_id if run else "",
                (run.version or "") if run else ""]


class RetrainBoard:
    """The retrain records of the progress board's model names, through a small cache."""

    def __init__(self, registry: Any, board: Any, refresh_seconds: float = REFRESH_SECONDS):
        self.registry, self.board, self.refresh_seconds = registry, board, refresh_seconds
        self._records: list[RetrainRecord] = []
        self._listed_at: float | None = None
        self._lock = threading.Lock()

    def rows(self) -> list[RetrainRow]:
        """The newest retrains first, each with its run and version."""
        records = self._refreshed()
        runs = self.board.retrain_runs()
        current = self.registry.current
        rows = []
        for record in records:
            run = runs.get(record.id)
            meta = (self.registry.meta_of(record.name, run.version)
                    if run and run.version else None)
            served = current.version if current and current.name == record.name else None
            rows.append(RetrainRow(record, run, meta, served))
        return rows

    def _refreshed(self) -> list[RetrainRecord]:
        with self._lock:
            now = time.monotonic()
            if self._listed_at is None or now - self._listed_at >= self.refresh_seconds:
                self._listed_at = now
                try:
                    self._records = self._read()
                except StoreError as e:  # keep the last answer; the poller logs outages
                    log.debug("retrain records not refreshed: %s", e)
            return list(self._records)

    def _read(self) -> list[RetrainRecord]:
        found = []
        for name in sorted(self.board.names()):
            keys = ModelKeys(name)
            for key in self.registry.store.list(keys.retrains):
                if keys.retrain_of_key(key) is None:
                    continue
                try:
                    found.append(RetrainRecord.from_json(self.registry.store.get_bytes(key)))
                except ObjectNotFound:
                    continue
                except MetaError as e:
                    log.debug("retrain record %s not shown: %s", key, e)
        found.sort(key=lambda r: (r.requested_at, r.id), reverse=True)
        return found[:SHOWN]
