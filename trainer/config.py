"""The training configuration: one dataclass, validated on construction.

``train.json`` (the stack's ConfigMap) holds ``dataset``, ``model``, ``epochs``,
``batch_size``, ``lr`` and ``seed``; every other field has a sensible default.

Stdlib only: the Pulumi program imports ``DATASETS``, ``MODELS`` and ``CIFAR10_URL``
from here, and its environment has no torch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from trainer.errors import ConfigError
from trainer.layout import model_name

# The single source of these names: trainer.data, trainer.models and infra import them.
DATASETS = ("cifar10", "imagefolder", "digits", "synthetic")
MODELS = ("resnet18", "resnet18-imagenet", "smallcnn")
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
AUGMENTATIONS = ("auto", "none", "crop", "flip", "crop+flip")
SCHEDULES = ("onecycle", "cosine")
# Fields that only change how a run is carried out, not its result: left out of run_id.
# precision follows the hardware (like the world size), so a run can move between node kinds.
OPERATIONAL_FIELDS = ("log_every", "precision", "keep_checkpoints")
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class TrainConfig:
    dataset: str = "cifar10"
    """Which dataset to train on: one of DATASETS."""
    model: str = "resnet18"
    """Architecture: one of MODELS."""
    epochs: int = 10
    """Passes over the training split."""
    batch_size: int = 128
    """Images per step *per worker*; the global batch is batch_size x world size."""
    lr: float = 0.1
    """Peak learning rate of the schedule."""
    seed: int = 0
    """Seeds initialisation, the per-epoch shuffle and augmentation."""
    momentum: float = 0.9
    """SGD (Nesterov) momentum."""
    weight_decay: float = 5e-4
    """L2 penalty applied by SGD."""
    label_smoothing: float = 0.0
    """Cross-entropy label smoothing, in [0, 1)."""
    schedule: str = "onecycle"
    """LR schedule over the whole run: 'onecycle' (warm-up then anneal) or 'cosine'."""
    augment: str = "auto"
    """'auto' = crop+flip, except digits (crop only: a mirrored digit is another glyph)."""
    data_prefix: str | None = None
    """Store prefix of the dataset (default ``datasets/<dataset>``); imagefolder reads
    class subfolders under it."""
    image_size: int = 32
    """Side length imagefolder images are resized to."""
    synthetic_size: int = 2048
    """Number of training images of the synthetic dataset."""
    log_every: int = 50
    """Steps between progress lines when stderr is not a terminal."""
    precision: str = "auto"
    """Autocast: 'auto' (bf16 on GPUs and CPUs with native bf16, else fp32), 'fp32', 'bf16'."""
    keep_checkpoints: int = 2
    """Newest checkpoints of a run kept while it trains (older ones are deleted once a newer
    one is written); a published run keeps none. Not part of the run's identity."""

    def __post_init__(self) -> None:
        _check_choice("dataset", self.dataset, DATASETS)
        _check_choice("model", self.model, MODELS)
        _check_choice("augment", self.augment, AUGMENTATIONS)
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("precision", self.precision, PRECISIONS)
        for key in ("epochs", "batch_size", "image_size", "synthetic_size", "log_every",
                    "keep_checkpoints"):
            _check_int(key, getattr(self, key), minimum=1)
        _check_int("seed", self.seed, minimum=0)
        _check_float("lr", self.lr, low=0.0, low_open=True)
        _check_float("momentum", self.momentum, low=0.0, high=1.0, high_open=True)
        _check_float("weight_decay", self.weight_decay, low=0.0)
        _check_float("label_smoothing", self.label_smoothing, low=0.0, high=1.0, high_open=True)
        if self.data_prefix is not None and not isinstance(self.data_prefix, str):
            raise ConfigError(f"data_prefix: must be a string, got {self.data_prefix!r}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown config key(s) {', '.join(map(repr, unknown))}; "
                              f"allowed keys: {', '.join(sorted(known))}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def resolved_augment(self) -> str:
        if self.augment != "auto":
            return self.augment
        return "crop" if self.dataset == "digits" else "crop+flip"

    def defining_fields(self) -> dict[str, Any]:
        """The fields that define a run's result (``augment`` resolved), not operational ones."""
        defining = {k: v for k, v in self.to_dict().items() if k not in OPERATIONAL_FIELDS}
        defining["augment"] = self.resolved_augment
        return defining

    @property
    def model_name(self) -> str:
        """``<model>-<dataset>``: the store folder of this model's runs and versions."""
        return model_name(self.model, self.dataset)


@dataclass(frozen=True)
class RunIdentity:
    """What a run's result is a function of; ``run_id`` is its short hash.

    The config alone does not say it: the same ``dataset`` name may hold other images after a
    re-ingest, and the same ``model`` name other code after an upgrade. Never the world size
    or resources: the same run resumes after a rescale, a pod restart or a crash.
    """

    config: TrainConfig
    data_fingerprint: str
    """Digest of the data's content (trainer.data: the CIFAR archive's sha256, the
    imagefolder manifest's, the generated digits'), equal on every rank."""
    model_revision: str
    """``<model>@<revision>`` (trainer.models.MODEL_REVISIONS): bumped when the code changes."""

    def __post_init__(self) -> None:
        for name in ("data_fingerprint", "model_revision"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ConfigError(f"run identity: {name} must be a non-empty string, got {value!r}")

    @property
    def run_id(self) -> str:
        blob = json.dumps({"config": self.config.defining_fields(), "data": self.data_fingerprint,
                           "model": self.model_revision}, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:10]

    def to_dict(self) -> dict[str, str]:
        """What logs, checkpoints and meta.json carry to name the run."""
        return {"run_id": self.run_id, "data_fingerprint": self.data_fingerprint,
                "model_revision": self.model_revision}


def read_json_file(path: str) -> dict[str, Any]:
    """The raw dict of a JSON config file (validated later, after flags are merged)."""
    try:
        with open(path, encoding="utf-8") as f:
            values = json.load(f)
    except OSError as e:
        raise ConfigError(f"config file {path}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"config file {path} is not valid JSON: {e}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a JSON object, "
                          f"got {type(values).__name__}")
    return values


def _check_choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}: {value!r} is not allowed; choose one of {', '.join(allowed)}")


def _check_int(key: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key}: must be an integer >= {minimum}, got {value!r}")


def _check_float(key: str, value: Any, *, low: float, high: float | None = None,
                 low_open: bool = False, high_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        ok = (value > low if low_open else value >= low)
        if high is not None:
            ok = ok and (value < high if high_open else value <= high)
    if not ok:
        lo = f"{'>' if low_open else '>='} {low}"
        hi = "" if high is None else f" and {'<' if high_open else '<='} {high}"
        raise ConfigError(f"{key}: must be a number {lo}{hi}, got {value!r}")
