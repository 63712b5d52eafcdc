"""The progress record of a run (``models/<name>/progress/<run_id>.json``) and the one
place a link to a run's MLflow page is spelled. Stdlib only."""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from typing import Any

from trainer.contract.errors import MetaError
from trainer.contract.lifecycle.retrain import RetrainTrigger
from trainer.contract.schema import EpochRecord
from trainer.contract.urls import display_url
from trainer.contract.validate import known_fields, loads, require

RUN_STATES = ("training", "publishing", "published", "interrupted", "failed")
# MLflow's own rule for run ids (its experiment ids, digits, pass it too): nothing a link
# built from them could be steered by.
_MLFLOW_ID = re.compile(r"[a-zA-Z0-9][\w\-]{0,255}")
_WEB_SCHEMES = ("http://", "https://")


def _optional_str(value: Any) -> bool:
    return value is None or (isinstance(value, str) and bool(value))


def _is_mlflow_id(value: Any) -> bool:
    return isinstance(value, str) and _MLFLOW_ID.fullmatch(value) is not None


def mlflow_run_page(base_url: str, experiment_id: str, run_id: str) -> str | None:
    """The MLflow UI page of a run on the server at ``base_url`` (its tracking URI or the
    address a user opens it at); None unless ``base_url`` is an http(s) URL and the ids
    are MLflow ids. The one place this link is spelled: the trainer writes it into the
    progress record, the app builds it on its own base URL."""
    if not (base_url.startswith(_WEB_SCHEMES) and _is_mlflow_id(experiment_id)
            and _is_mlflow_id(run_id)):
        return None
    # Credentials in the URL (basic auth of an external MLflow) are never part of a link.
    base = display_url(base_url).split("#", 1)[0].rstrip("/")
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


@dataclass(frozen=True)
class RunProgress:
    """``models/<name>/progress/<run_id>.json``: a run while it trains (the app's
    Training tab), before anything is published. Rank 0 rewrites the whole record at the
    start, after each epoch and once published; the store's put is atomic, so a reader sees
    the previous record or the next, never half of one."""

    run_id: str
    model: str
    dataset: str
    state: str
    """'training', 'publishing' (every epoch done, the version being written), 'published',
    'interrupted' (stopped by Ctrl-C after ``epoch`` epochs; a restart resumes it), 'failed'
    (rank 0 stopped with an error; a restart resumes it too)."""
    epoch: int
    """Epochs done (0 before the first one ends)."""
    epochs: int
    """Epochs of the run (N: "epoch k of N")."""
    world_size: int
    """Processes training now (a resumed run may have another one than before)."""
    started_at: str
    """UTC, ISO 8601: when the run first started (kept across restarts)."""
    updated_at: str
    """UTC, ISO 8601: when rank 0 wrote this record (its clock)."""
    history: list[EpochRecord] = field(default_factory=list)
    """Every epoch done so far, in order (the curves so far)."""
    version: str | None = None
    """The published version, once ``state`` is 'published'."""
    mlflow_run_id: str | None = None
    """The run's MLflow run, once MLflow answered (tracking on). A published version's
    MLflow run: ``ModelKeys.progress(meta.run_id)`` is this record (one version per run)."""
    mlflow_experiment_id: str | None = None
    mlflow_url: str | None = None
    """The MLflow UI page of the run (:func:`mlflow_run_page` on MLFLOW_TRACKING_URI, as
    the trainer sees the server: a reader elsewhere uses :meth:`mlflow_page` with its own
    base URL)."""
    retrain: RetrainTrigger | None = None
    """Why a retrain trained this run (trainer.contract.lifecycle.retrain); None for other runs."""

    def __post_init__(self) -> None:
        for name in ("run_id", "model", "dataset", "started_at", "updated_at"):
            require(isinstance(getattr(self, name), str) and bool(getattr(self, name)),
                     f"progress {name}", "a non-empty string", getattr(self, name))
        require(self.state in RUN_STATES, "progress state", f"one of {', '.join(RUN_STATES)}",
                 self.state)
        require(type(self.epochs) is int and self.epochs >= 1, "progress epochs",
                 "an integer >= 1", self.epochs)
        require(type(self.epoch) is int and 0 <= self.epoch <= self.epochs, "progress epoch",
                 f"an integer from 0 to {self.epochs}", self.epoch)
        require(type(self.world_size) is int and self.world_size >= 1, "progress world_size",
                 "an integer >= 1", self.world_size)
        require(isinstance(self.history, list) and all(isinstance(e, EpochRecord)
                                                        for e in self.history),
                 "progress history", "a list of epoch records", self.history)
        epochs = [e.epoch for e in self.history]
        require(epochs == sorted(set(epochs)) and all(e <= self.epoch for e in epochs),
                 "progress history", f"increasing epochs up to {self.epoch}", epochs)
        require(_optional_str(self.version), "progress version", "null or a non-empty string",
                 self.version)
        for name in ("mlflow_run_id", "mlflow_experiment_id"):
            value = getattr(self, name)
            require(value is None or _is_mlflow_id(value), f"progress {name}",
                     "null or an MLflow id (letters, digits, '_', '-')", value)
        require(self.mlflow_url is None or (isinstance(self.mlflow_url, str)
                                             and self.mlflow_url.startswith(_WEB_SCHEMES)),
                 "progress mlflow_url", "null or an http(s) URL", self.mlflow_url)
        require((self.state == "published") == (self.version is not None), "progress version",
                 "set exactly when the state is 'published'", self.version)
        require(self.retrain is None or isinstance(self.retrain, RetrainTrigger),
                "progress retrain", "null or a retrain trigger", self.retrain)

    @classmethod
    def from_json(cls, data: bytes | str) -> RunProgress:
        values = known_fields(cls, loads(data, "progress record"), "progress record")
        history = values.get("history", [])
        require(isinstance(history, list), "progress history", "a list", history)
        values["history"] = [EpochRecord.from_dict(e) for e in history]
        if values.get("retrain") is not None:
            values["retrain"] = RetrainTrigger.from_dict(values["retrain"])
        try:
            return cls(**values)
        except TypeError as e:
            raise MetaError(f"progress record: {e}") from None

    def to_json(self) -> bytes:
        values = dataclasses.asdict(self)
        if values["retrain"] is None:  # as before retrains existed
            del values["retrain"]
        return json.dumps(values, indent=1).encode()

    def mlflow_page(self, base_url: str | None = None) -> str | None:
        """The run's MLflow UI page on ``base_url`` (the address the reader opens MLflow
        at), else as the trainer saw it; None while MLflow has not named the run."""
        if base_url is None:  # a record written before links were cleaned may hold some
            return display_url(self.mlflow_url) if self.mlflow_url else None
        if self.mlflow_run_id is None or self.mlflow_experiment_id is None:
            return None
        return mlflow_run_page(base_url, self.mlflow_experiment_id, self.mlflow_run_id)
