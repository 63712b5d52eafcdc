"""What a retrain is, in the store: why it started, how far it got, and which one holds the
model's retrain slot. Stdlib only: the trainer writes these, the app reads them.

- ``models/<name>/retrains/<id>.json`` (RetrainRecord): one per retrain, rewritten whole by
  the retrain Job's pod as it goes (starting, training, finished or failed; skipped when
  another retrain of the model was training).
- ``models/<name>/retrain-slot.json`` (RetrainSlot): which retrain may train the model now,
  taken and handed over by conditional writes only, so two retrains of one model never
  train at once (their runs differ: the run lease alone could not keep them apart).
- A retrain's run carries a RetrainTrigger in its progress record and its meta.json (and
  MLflow tags): why it started and, for drift, the report that triggered it.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from trainer.contract.validate import known_fields, record_from_json, require

SCHEDULE, DRIFT, PERSON = "schedule", "drift", "person"
REASONS = (SCHEDULE, DRIFT, PERSON)
STARTING, TRAINING, FINISHED, FAILED, SKIPPED = (
    "starting", "training", "finished", "failed", "skipped")
STATES = (STARTING, TRAINING, FINISHED, FAILED, SKIPPED)
ENDED = (FINISHED, FAILED, SKIPPED)
# A retrain's id: part of its run's identity and of store keys, so a plain name.
RETRAIN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# Every time in a retrain record: sorted as strings, they sort in time.
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
RETRAIN_ID_RULE = "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"


def parse_utc_time(value: str) -> datetime:
    """A record's time (``TIME_FORMAT``); ValueError when it is not one."""
    return datetime.strptime(value, TIME_FORMAT).replace(tzinfo=UTC)


def is_utc_time(value: Any) -> bool:
    try:
        return isinstance(value, str) and parse_utc_time(value) is not None
    except ValueError:
        return False


def is_retrain_id(value: Any) -> bool:
    return isinstance(value, str) and RETRAIN_ID.fullmatch(value) is not None


def retrain_fields_problem(retrain_id: Any, reason: Any, report: Any) -> str | None:
    """What is wrong with TrainConfig's retrain_id, retrain_reason and retrain_report
    (None: nothing), naming the field and what is allowed."""
    if not retrain_id:
        if reason or report:
            return "retrain_reason, retrain_report: set only with retrain_id"
        return None
    if not is_retrain_id(retrain_id):
        return f"retrain_id: {retrain_id!r} is not allowed; use {RETRAIN_ID_RULE}"
    if reason not in REASONS:
        return f"retrain_reason: {reason!r} is not allowed; choose one of {', '.join(REASONS)}"
    if not isinstance(report, str) or (report and reason != DRIFT):
        return ("retrain_report: the store key of a drift report, set only when "
                "retrain_reason is drift")
    return None


@dataclass(frozen=True)
class RetrainTrigger:
    """Why a run was trained (meta.json and progress ``retrain``)."""

    id: str
    reason: str
    """'schedule' (the CronJob's schedule), 'drift' (the monitor's reports), 'person'
    (``kubectl create job --from=cronjob/...``)."""
    report: str = ""
    """The store key of the drift report that triggered it ('' unless reason is drift)."""

    def __post_init__(self) -> None:
        require(is_retrain_id(self.id), "retrain id", RETRAIN_ID_RULE, self.id)
        require(self.reason in REASONS, "retrain reason", ", ".join(REASONS), self.reason)
        require(isinstance(self.report, str), "retrain report", "a string", self.report)

    @classmethod
    def from_dict(cls, values: Any) -> RetrainTrigger:
        return cls(**known_fields(cls, values, "retrain"))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class RetrainRecord:
    """``models/<name>/retrains/<id>.json``: one retrain as its Job's pod saw it."""

    id: str
    name: str
    """``<model>-<dataset>``."""
    reason: str
    state: str
    requested_at: str
    """UTC, ISO 8601: when the retrain's Job was created."""
    updated_at: str
    job: str = ""
    """The retrain's Kubernetes Job."""
    training_job: str = ""
    """The training job (PyTorchJob or TrainJob) it created, once created."""
    report: str = ""
    message: str = ""
    """One line: what it is doing, or why it failed or was skipped."""

    def __post_init__(self) -> None:
        require(is_retrain_id(self.id), "retrain record id", RETRAIN_ID_RULE, self.id)
        require(self.reason in REASONS, "retrain record reason", ", ".join(REASONS),
                self.reason)
        require(self.state in STATES, "retrain record state", ", ".join(STATES), self.state)
        for name in ("requested_at", "updated_at"):
            require(is_utc_time(getattr(self, name)), f"retrain record {name}",
                    f"a UTC time such as 2026-12-07T12:00:00Z ({TIME_FORMAT})",
                    getattr(self, name))
        for name in ("name", "job", "training_job", "report",
                     "message"):
            require(isinstance(getattr(self, name), str), f"retrain record {name}",
                    "a string", getattr(self, name))

    @property
    def trigger(self) -> RetrainTrigger:
        return RetrainTrigger(self.id, self.reason, self.report)

    @classmethod
    def from_json(cls, data: bytes | str) -> RetrainRecord:
        return record_from_json(cls, data, "retrain record")

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), indent=1).encode()


@dataclass(frozen=True)
class RetrainSlot:
    """``models/<name>/retrain-slot.json``: the retrain allowed to train the model. A
    holder that ended releases it; one that died leaves it to the next retrain, which takes
    it over once the holder's training job (or, before it made one, its Job) has ended."""

    retrain_id: str
    job: str
    training_job: str = ""
    released: bool = False
    taken_at: str = ""

    def __post_init__(self) -> None:
        require(is_retrain_id(self.retrain_id), "retrain slot retrain_id", RETRAIN_ID_RULE,
                self.retrain_id)
        require(isinstance(self.released, bool), "retrain slot released", "true or false",
                self.released)

    @classmethod
    def from_json(cls, data: bytes | str) -> RetrainSlot:
        return record_from_json(cls, data, "retrain slot")

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self)).encode()


# The training job a retrain creates carries these labels (values: a model name, an id).
MODEL_LABEL = "retrain.trainstack.io/model"
ID_LABEL = "retrain.trainstack.io/id"
TRAINING_KINDS = {"PyTorchJob": ("kubeflow.org", "v1", "pytorchjobs"),
                  "TrainJob": ("trainer.kubeflow.org", "v1alpha1", "trainjobs")}


@dataclass(frozen=True)
class RetrainManifest:
    """The file the stack mounts into the retrain Job's pod: what to create for a retrain.

    ``job`` is the stack's own training job (PyTorchJob or TrainJob) as a manifest, with its
    workers, resources, image and pod template, minus a name: each retrain's job is named
    ``<prefix>-<suffix>`` and gets the retrain's arguments on its training command."""

    name: str
    """``<model>-<dataset>``: the store prefix the retrain publishes under."""
    dataset: str
    prefix: str
    job: dict[str, Any]

    def __post_init__(self) -> None:
        for name in ("name", "dataset", "prefix"):
            require(isinstance(getattr(self, name), str) and bool(getattr(self, name)),
                    f"retrain manifest {name}", "a non-empty string", getattr(self, name))
        require(isinstance(self.job, dict) and self.job.get("kind") in TRAINING_KINDS,
                "retrain manifest job", f"a {' or '.join(TRAINING_KINDS)} manifest",
                self.job.get("kind") if isinstance(self.job, dict) else self.job)

    @classmethod
    def from_json(cls, data: bytes | str) -> RetrainManifest:
        return record_from_json(cls, data, "retrain manifest")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1, sort_keys=True)
