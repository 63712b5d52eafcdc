"""Runs as the trainer reports them: progress records, without MLflow.

Rank 0 rewrites ``models/<name>/progress/<run_id>.json`` (trainer.contract.reporting.progress.RunProgress,
key from trainer.contract.layout.ModelKeys.progress) at the start, after each epoch and once
published. The app reads them for two things:

- the Training tab's view of runs that have not published yet (epoch k of N, the curves
  so far), also on the "no model yet" page of a store whose first run is training;
- each published version's MLflow run: the record of the version's ``run_id`` holds its
  MLflow ids, and the link is built on the address users open MLflow at
  (``--mlflow-ui-url``), else the one the trainer saw.

Store reads are bounded: the unpublished runs are listed and read at most every
``refresh_seconds`` whatever the number of browser tabs; a published run's record is
final (re-read after FINAL_SECONDS, in case a later job back-filled its MLflow ids).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any
from urllib.parse import quote

from trainer.contract.errors import MetaError, ObjectNotFound, StoreError
from trainer.contract.layout import ModelKeys
from trainer.contract.reporting.progress import RunProgress

log = logging.getLogger(__name__)

REFRESH_SECONDS = 5.0
FINAL_SECONDS = 300.0
# What a link may keep as it is; anything else (parentheses, brackets, quotes, spaces) is
# percent-encoded, so a stored URL cannot break out of the Markdown link it is put in.
URL_SAFE = ":/#?&=%-._~+,;@$"


def markdown_link(text: str, url: str) -> str:
    return f"[{text}]({quote(url, safe=URL_SAFE)})"


def literal(text: str) -> str:
    """``text`` as a Markdown code span: shown as it is, never read as Markdown or HTML.

    For strings from the store (run ids, names, timestamps of progress records and
    versions): whoever can write to the store writes them, and every visitor sees them.
    Line breaks become spaces (a blank line would end the paragraph, and the span with
    it); the span's fence is longer than any run of backticks inside.
    """
    flat = " ".join(str(text).split())
    fence = "`" * (max(map(len, re.findall("`+", flat)), default=0) + 1)
    return f"{fence} {flat} {fence}"


class ProgressBoard:
    """Progress records of the registry's model names, read through a small cache."""

    def __init__(self, registry: Any, mlflow_ui_url: str | None = None,
                 refresh_seconds: float = REFRESH_SECONDS):
        self.registry, self.mlflow_ui_url = registry, mlflow_ui_url
        self.refresh_seconds = refresh_seconds
        self._records: dict[str, tuple[RunProgress | None, float]] = {}
        self._running: list[RunProgress] = []
        self._newest: dict[str, RunProgress] = {}  # per model name, whatever its state
        self._retrains: dict[str, RunProgress] = {}  # retrain id -> the run it trained
        self._listed_at: float | None = None
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    def names(self) -> set[str]:
        """The served model's name if one is configured, else every name discovered."""
        registry = self.registry
        if registry.model_name:
            return {registry.model_name}
        names = set(registry.progress_names)
        if registry.current is not None:
            names.add(registry.current.name)
        return names

    def running(self) -> list[RunProgress]:
        """Runs not published yet (training or publishing), last updated first."""
        with self._lock:
            now = time.monotonic()
            if self._listed_at is None or now - self._listed_at >= self.refresh_seconds:
                self._listed_at = now
                try:
                    self._running = self._read_running()
                except StoreError as e:  # keep showing the last answer; the poller logs outages
                    log.debug("progress records not refreshed: %s", e)
            return list(self._running)

    def newest(self) -> dict[str, RunProgress]:
        """The most recently updated run of each model name (refreshed like running())."""
        self.running()
        with self._lock:
            return dict(self._newest)

    def retrain_runs(self) -> dict[str, RunProgress]:
        """The run each retrain trained, by retrain id (refreshed like running())."""
        self.running()
        with self._lock:
            return dict(self._retrains)

    def mlflow_link(self, name: str, run_id: str) -> str | None:
        """The MLflow UI page of ``run_id``'s MLflow run, if the trainer recorded one."""
        with self._lock:
            try:
                record = self._record(ModelKeys(name).progress(run_id))
            except StoreError:
                return None
        return self.link_of(record) if record else None

    def mlflow_run_id(self, name: str, run_id: str) -> str | None:
        """The MLflow run the trainer recorded for ``run_id`` (None: none, or unreadable)."""
        with self._lock:
            try:
                record = self._record(ModelKeys(name).progress(run_id))
            except StoreError:
                return None
        return record.mlflow_run_id if record else None

    def link_of(self, record: RunProgress) -> str | None:
        return record.mlflow_page(self.mlflow_ui_url)

    def _read_running(self) -> list[RunProgress]:
        runs, newest, retrains = [], {}, {}
        for name in sorted(self.names()):
            keys = ModelKeys(name)
            for key in self.registry.store.list(keys.progresses):
                if keys.run_of_progress_key(key) is None:
                    continue
                record = self._record(key)
                if record is None:
                    continue
                if record.state != "published":
                    runs.append(record)
                if record.retrain is not None:
                    retrains[record.retrain.id] = record
                if name not in newest or (record.updated_at, record.run_id) > (
                        newest[name].updated_at, newest[name].run_id):
                    newest[name] = record
        self._newest, self._retrains = newest, retrains
        return sorted(runs, key=lambda r: (r.updated_at, r.run_id), reverse=True)

    def _record(self, key: str) -> RunProgress | None:
        """The record at ``key`` (None: absent or unreadable); final ones from the cache."""
        cached = self._records.get(key)
        if cached is not None:
            record, read_at = cached
            final = record is None or record.state == "published"
            if final and time.monotonic() - read_at < FINAL_SECONDS:
                return record
        try:
            record = RunProgress.from_json(self.registry.store.get_bytes(key))
        except ObjectNotFound:
            record = None
        except MetaError as e:
            if key not in self._warned:
                self._warned.add(key)
                log.warning("ignoring unreadable progress record %s: %s", key, e)
            record = None
        self._records[key] = (record, time.monotonic())
        return record
