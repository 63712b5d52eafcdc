"""The published-version schema: ``meta.json``, ``metrics.json`` and the per-epoch record.

One definition each, used to write (the trainer, test fixtures, benchmarks) and to read
and validate (the app): construction validates, so an object that exists is valid.
Reading ignores keys it does not know, so an older app keeps reading versions that a
newer trainer wrote with extra fields. Stdlib only.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from trainer.contract.errors import MetaError
from trainer.contract.layout import META_FILE, METRICS_FILE, MODEL_FILE, is_safe_relative
from trainer.contract.lifecycle.promotion import Promotion
from trainer.contract.lifecycle.retrain import RetrainTrigger
from trainer.contract.validate import is_number, known_fields, loads, require


@dataclass(frozen=True)
class EpochRecord:
    """One epoch of a run: the ``epoch`` log line, metrics.json and the checkpoint history."""

    epoch: int
    train_loss: float
    """Mean plain cross-entropy of the epoch's training batches (augmented, train mode, as
    each step saw them before its update): the same quantity as ``test_loss``, whatever
    label smoothing the optimizer minimises."""
    train_acc: float
    test_loss: float
    """Mean plain cross-entropy on the test split (the served model, eval mode)."""
    test_acc: float
    img_per_s: float
    """Training images per second over all ranks."""
    seconds: float
    """Wall time of the epoch: training and evaluation."""

    def __post_init__(self) -> None:
        require(type(self.epoch) is int and self.epoch >= 1, "epoch record: epoch",
                 "an integer >= 1", self.epoch)
        for name in ("train_loss", "train_acc", "test_loss", "test_acc", "img_per_s", "seconds"):
            require(is_number(getattr(self, name)), f"epoch record: {name}", "a number",
                     getattr(self, name))

    @classmethod
    def from_dict(cls, values: Any) -> EpochRecord:
        return cls(**known_fields(cls, values, "epoch record"))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class MetricsSummary:
    """The headline figures of a version (meta.json ``metrics``)."""

    test_acc: float
    test_loss: float
    epochs: int
    train_seconds: float

    def __post_init__(self) -> None:
        for name in ("test_acc", "test_loss", "train_seconds"):
            require(is_number(getattr(self, name)), f"meta.json metrics.{name}", "a number",
                     getattr(self, name))
        require(type(self.epochs) is int and self.epochs >= 0, "meta.json metrics.epochs",
                 "an integer >= 0", self.epochs)

    @classmethod
    def of(cls, history: list[EpochRecord]) -> MetricsSummary:
        last = history[-1]
        return cls(test_acc=last.test_acc, test_loss=last.test_loss, epochs=len(history),
                   train_seconds=round(sum(e.seconds for e in history), 2))


@dataclass(frozen=True)
class VersionMetrics:
    """``metrics.json``: every epoch, the last confusion matrix (rows = true class)."""

    epochs: list[EpochRecord]
    confusion_matrix: list[list[int]]
    classes: list[str]
    world_size: int

    def __post_init__(self) -> None:
        require(isinstance(self.classes, list) and all(isinstance(c, str) for c in self.classes),
                 "metrics.json classes", "a list of strings", self.classes)
        n = len(self.classes)
        require(isinstance(self.confusion_matrix, list) and len(self.confusion_matrix) in (0, n)
                 and all(isinstance(r, list) and len(r) == n and all(type(v) is int for v in r)
                         for r in self.confusion_matrix),
                 "metrics.json confusion_matrix", f"a {n} x {n} list of integers",
                 self.confusion_matrix)
        require(type(self.world_size) is int and self.world_size >= 1, "metrics.json world_size",
                 "an integer >= 1", self.world_size)

    @classmethod
    def from_json(cls, data: bytes | str) -> VersionMetrics:
        values = known_fields(cls, loads(data, METRICS_FILE), METRICS_FILE)
        require(isinstance(values["epochs"], list), "metrics.json epochs", "a list",
                 values["epochs"])
        values["epochs"] = [EpochRecord.from_dict(e) for e in values["epochs"]]
        return cls(**values)

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), indent=1).encode()


@dataclass(frozen=True)
class VersionMeta:
    """``meta.json``: everything a reader needs to serve a version without project code."""

    model: str
    dataset: str
    version: str
    run_id: str
    classes: list[str]
    input_size: list[int]
    """[C, H, W] of the model's input (C is 1 or 3)."""
    mean: list[float]
    """Per channel, for pixels scaled to [0, 1]; the input is (x - mean) / std."""
    std: list[float]
    train_config: dict[str, Any]
    metrics: MetricsSummary
    created_at: str
    """UTC, ISO 8601 (``2026-11-23T15:24:00Z``)."""
    files: list[str] = field(default_factory=lambda: [MODEL_FILE, METRICS_FILE])
    """Files of the version folder a reader downloads (paths relative to it)."""
    examples: list[str] = field(default_factory=list)
    """Example test images (``examples/<index>-<class>.png``), for clickable examples."""
    sequence: int = 0
    """Publication order of the model's versions, allocated by a conditional write once the
    version's files are uploaded (0: written before sequences existed). latest.json moves
    to a version only if its sequence is higher: pods' clocks need not agree."""
    data_fingerprint: str = ""
    """The run's data fingerprint (trainer.contract.config.RunIdentity)."""
    model_revision: str = ""
    """The run's model-code revision, ``<model>@<n>``."""
    reference: str = ""
    """The version's monitoring reference file (REFERENCE_FILE, listed in ``files``); ""
    for versions published before references existed: monitoring says so and serving goes on."""
    promotion: Promotion | None = None
    """The promotion gate's verdict (trainer.contract.lifecycle.promotion); None with the gate off
    and in versions published before the gate existed."""
    retrain: RetrainTrigger | None = None
    """Why the run was trained, when a retrain trained it (trainer.contract.lifecycle.retrain)."""

    def __post_init__(self) -> None:
        require(type(self.sequence) is int and self.sequence >= 0, "meta.json sequence",
                 "an integer >= 0", self.sequence)
        for name in ("model", "dataset", "run_id", "created_at", "data_fingerprint",
                     "model_revision", "reference"):
            require(isinstance(getattr(self, name), str), f"meta.json {name}", "a string",
                     getattr(self, name))
        require(isinstance(self.version, str) and bool(self.version) and "/" not in self.version,
                 "meta.json version", "a non-empty name without '/'", self.version)
        require(isinstance(self.classes, list) and bool(self.classes)
                 and all(isinstance(c, str) for c in self.classes),
                 "meta.json classes", "a non-empty list of strings", self.classes)
        size = self.input_size
        require(isinstance(size, list) and len(size) == 3
                 and all(type(v) is int and v > 0 for v in size) and size[0] in (1, 3),
                 "meta.json input_size", "[C, H, W] (C 1 or 3, positive integers)", size)
        for name in ("mean", "std"):
            values = getattr(self, name)
            require(isinstance(values, list) and len(values) == size[0]
                     and all(is_number(v) for v in values), f"meta.json {name}",
                     f"{size[0]} number(s)", values)
        require(all(v > 0 for v in self.std), "meta.json std", "positive numbers", self.std)
        require(isinstance(self.train_config, dict), "meta.json train_config", "a JSON object",
                 self.train_config)
        require(isinstance(self.metrics, MetricsSummary), "meta.json metrics",
                 "a metrics summary", self.metrics)
        for name in ("files", "examples"):
            paths = getattr(self, name)
            require(isinstance(paths, list) and all(isinstance(p, str) and is_safe_relative(p)
                                                     and p != META_FILE for p in paths),
                     f"meta.json {name}", "a list of relative paths inside the version folder",
                     paths)
        require(not self.reference or self.reference in self.files, "meta.json reference",
                "empty or one of the version's files", self.reference)
        require(self.promotion is None or isinstance(self.promotion, Promotion),
                "meta.json promotion", "null or a verdict", self.promotion)
        require(self.retrain is None or isinstance(self.retrain, RetrainTrigger),
                "meta.json retrain", "null or a retrain trigger", self.retrain)

    @classmethod
    def from_json(cls, data: bytes | str) -> VersionMeta:
        values = known_fields(cls, loads(data, META_FILE), META_FILE)
        values["metrics"] = MetricsSummary(**known_fields(MetricsSummary, values["metrics"],
                                                    "meta.json metrics"))
        if values.get("promotion") is not None:
            values["promotion"] = Promotion.from_dict(values["promotion"])
        if values.get("retrain") is not None:
            values["retrain"] = RetrainTrigger.from_dict(values["retrain"])
        try:
            return cls(**values)
        except TypeError as e:  # a field of the wrong JSON type that slipped past require
            raise MetaError(f"{META_FILE}: {e}") from None

    def to_json(self) -> bytes:
        values = dataclasses.asdict(self)
        for name in ("promotion", "retrain"):  # absent, as before they existed, when unset
            if values[name] is None:
                del values[name]
        return json.dumps(values, indent=1).encode()

    @property
    def name(self) -> str:
        from trainer.contract.layout import model_name

        return model_name(self.model, self.dataset)

    @property
    def downloads(self) -> list[str]:
        """Every file a reader fetches: the model first, then listed files and examples."""
        return list(dict.fromkeys([MODEL_FILE, *self.files, *self.examples]))
