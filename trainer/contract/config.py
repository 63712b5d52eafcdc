"""The training configuration: one dataclass, validated on construction.

``train.json`` (the stack's ConfigMap) holds ``dataset``, ``model``, ``epochs``,
``batch_size``, ``lr``, ``seed`` and ``checkpoint_every_steps``; every other field has a
sensible default. The recipe fields (label smoothing, schedule, warm-up, crop padding,
test-time flip) default to ``"auto"``: the values the chosen model was tuned with (MODEL_RECIPES), else DEFAULT_RECIPE.

Stdlib only: the Pulumi program imports ``DATASETS``, ``MODELS`` and ``CIFAR10_URL``
from here, and its environment has no torch.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from trainer.contract.datasets import dataset_name_problem
from trainer.contract.errors import ConfigError
from trainer.contract.layout import dataset_prefix, model_name
from trainer.contract.lifecycle.retrain import RetrainTrigger, retrain_fields_problem

# The single source of these names: trainer.data.loading, trainer.models.zoo and infra import them.
DATASETS = ("cifar10", "imagefolder", "digits", "synthetic")
# `synthetic` is random data for benchmarks: a real run on it (the stack's, `make demo`'s)
# would publish a model that the app serves as if it had learned something.
BENCHMARK_DATASETS = ("synthetic",)
MODELS = ("resnet18", "resnet18-imagenet", "smallcnn", "fastcifar")
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
AUGMENTATIONS = ("auto", "none", "crop", "flip", "crop+flip")
SCHEDULES = ("onecycle", "linear", "cosine")
AUTO = "auto"


@dataclass(frozen=True)
class Recipe:
    """The training recipe of a run, every ``"auto"`` resolved (TrainConfig.recipe)."""

    label_smoothing: float
    schedule: str
    """'onecycle': warm-up from 4% of lr, then cosine to 0; 'linear': the same warm-up, then
    a straight line to 0; 'cosine': cosine from lr to 0, no warm-up."""
    warmup: float
    """Share of the run spent warming up (onecycle, linear)."""
    crop_padding: float
    """Random-crop padding as a share of the image side (0.125 = 4 px at 32 px)."""
    test_flip: bool
    """Evaluate, and publish, the average of the logits of each image and its mirror image."""


# What every model trains with unless its recipe says otherwise: the trainer's behaviour
# before recipes existed, so an "auto" field means exactly what older images did.
DEFAULT_RECIPE = Recipe(label_smoothing=0.0, schedule="onecycle", warmup=0.15,
                        crop_padding=0.125, test_flip=False)
# Per-model values, from the published fast CIFAR-10 training records and tuned on the 10%
# sample on 2 CPU cores (README, "Models"). test_flip applies only with flip augmentation.
MODEL_RECIPES = {
    "fastcifar": Recipe(label_smoothing=0.2, schedule="linear", warmup=0.0,
                        crop_padding=0.0625, test_flip=True),
}
# Recipe fields added after the first release: left out of a run's identity at their
# DEFAULT_RECIPE value, so runs configured before they existed keep their run_id (and
# resume, or stay published, across an upgrade).
LATER_RECIPE_FIELDS = ("warmup", "crop_padding", "test_flip")
# A 2 x 2 whitening stem needs images of at least 2 x 2 pixels.
MIN_IMAGE_SIZE = {"fastcifar": 2}
# Fields that only change how a run is carried out, not its result: left out of run_id.
# precision follows the hardware (like the world size), so a run can move between node kinds.
# data_loading: memory and stream train on the same samples in the same order.
# retrain_reason, retrain_report: why a retrain trained the run, not what it trained.
OPERATIONAL_FIELDS = ("log_every", "precision", "keep_checkpoints", "compile", "data_loading",
                      "checkpoint_every_steps", "retrain_reason", "retrain_report")
# Where a run lives, not what it trains on: its data's content is in the run's identity
# (RunIdentity.data_fingerprint), and left out, runs configured before names existed keep
# their run_id.
NAMING_FIELDS = ("dataset_name",)
# Defining only when set: every run before retrains existed keeps its run_id.
RETRAIN_FIELDS = ("retrain_id",)
PRECISIONS = ("auto", "fp32", "bf16")
DATA_LOADINGS = ("auto", "memory", "stream")


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
    label_smoothing: float | str = AUTO
    """Cross-entropy label smoothing, in [0, 1); 'auto': the model's recipe (0 by default)."""
    schedule: str = AUTO
    """LR schedule over the whole run: 'onecycle', 'linear' or 'cosine' (Recipe.schedule);
    'auto': the model's recipe (onecycle by default)."""
    warmup: float | str = AUTO
    """Share of the run spent warming up, in [0, 1), for onecycle and linear; 'auto': the
    model's recipe (0.15 by default)."""
    augment: str = "auto"
    """'auto' = crop+flip, except digits (crop only: a mirrored digit is another glyph)."""
    crop_padding: float | str = AUTO
    """Random-crop padding as a share of the image side, in (0, 0.5] (0.125 = 4 px at 32 px);
    'auto': the model's recipe (0.125 by default)."""
    test_flip: bool | str = AUTO
    """Average each test image's logits with its mirror image's, in evaluation and in the
    published model; needs flip augmentation. 'auto': the model's recipe when augment flips."""
    dataset_name: str | None = None
    """The dataset's name in the store, when it is not the kind's own: ``imagefolder-<label>``
    for an image folder of its own (trainer.contract.layout.folder_dataset_name; `make demo`
    names each folder so). It names the data's prefix ``datasets/<dataset_name>`` and the
    model ``<model>-<dataset_name>``: two folders never share versions. None: ``dataset``."""
    data_prefix: str | None = None
    """Store prefix of the dataset (default ``datasets/<dataset_name>``); imagefolder reads
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
    compile: bool = False
    """torch.compile the training step's model (GPUs: fewer, fused kernels); evaluation,
    checkpoints and the export use the module itself. Not part of the run's identity."""
    data_loading: str = "auto"
    """'memory': decode the whole dataset into memory; 'stream': read an imagefolder's shards
    as training goes (trainer.data.streaming); 'auto': stream when the decoded dataset would take
    more than its share of the memory limit. Not part of the run's identity."""
    checkpoint_every_steps: int = 500
    """Steps between mid-epoch checkpoints, which hold the exact position in the epoch
    (0: at the end of each epoch only). Not part of the run's identity."""
    retrain_id: str = ""
    """A retrain's id (``python -m trainer retrain`` sets it, trainer.contract.lifecycle.retrain): the
    same config on the same data trained again is a new run. '' for every other run."""
    retrain_reason: str = ""
    """Why the retrain started: schedule, drift or person ('' without retrain_id). Not part
    of the run's identity."""
    retrain_report: str = ""
    """The store key of the drift report that triggered the retrain. Not part of the run's
    identity."""

    def __post_init__(self) -> None:
        _check_choice("dataset", self.dataset, DATASETS)
        _check_choice("model", self.model, MODELS)
        _check_choice("augment", self.augment, AUGMENTATIONS)
        _check_choice("schedule", self.schedule, (AUTO, *SCHEDULES))
        _check_choice("precision", self.precision, PRECISIONS)
        _check_choice("data_loading", self.data_loading, DATA_LOADINGS)
        _check_int("checkpoint_every_steps", self.checkpoint_every_steps, minimum=0)
        if self.data_loading == "stream" and self.dataset != "imagefolder":
            raise ConfigError(f"data_loading: 'stream' reads an imagefolder's shards; dataset "
                              f"{self.dataset!r} is held in memory: use 'auto' or 'memory'")
        for key in ("epochs", "batch_size", "image_size", "synthetic_size", "log_every",
                    "keep_checkpoints"):
            _check_int(key, getattr(self, key), minimum=1)
        _check_int("seed", self.seed, minimum=0)
        if not isinstance(self.compile, bool):
            raise ConfigError(f"compile: must be true or false, got {self.compile!r}")
        _check_float("lr", self.lr, low=0.0, low_open=True)
        _check_float("momentum", self.momentum, low=0.0, high=1.0, high_open=True)
        _check_float("weight_decay", self.weight_decay, low=0.0)
        self._check_recipe_fields()
        if self.dataset_name is not None:
            problem = (dataset_name_problem(self.dataset, self.dataset_name)
                       if isinstance(self.dataset_name, str) else "not a string")
            if problem:
                raise ConfigError(f"dataset_name: {self.dataset_name!r}: {problem}")
        problem = retrain_fields_problem(self.retrain_id, self.retrain_reason,
                                         self.retrain_report)
        if problem:
            raise ConfigError(problem)
        if self.data_prefix is not None and not isinstance(self.data_prefix, str):
            raise ConfigError(f"data_prefix: must be a string, got {self.data_prefix!r}")
        smallest = MIN_IMAGE_SIZE.get(self.model, 1)
        if self.dataset in ("imagefolder", "synthetic") and self.image_size < smallest:
            raise ConfigError(f"image_size: model {self.model!r} takes images of at least "
                              f"{smallest}x{smallest} pixels, got {self.image_size}")

    def _check_recipe_fields(self) -> None:
        for key, high, high_open in (("label_smoothing", 1.0, True), ("warmup", 1.0, True)):
            if getattr(self, key) != AUTO:
                _check_float(key, getattr(self, key), low=0.0, high=high, high_open=high_open,
                             allowed="or 'auto'")
        if self.crop_padding != AUTO:
            _check_float("crop_padding", self.crop_padding, low=0.0, low_open=True, high=0.5,
                         allowed="or 'auto'")
            if "crop" not in self.resolved_augment:
                raise ConfigError(f"crop_padding: set to {self.crop_padding!r}, but augment "
                                  f"{self.resolved_augment!r} does not crop")
        if not (self.test_flip == AUTO or isinstance(self.test_flip, bool)):
            raise ConfigError(f"test_flip: must be true, false or 'auto', got {self.test_flip!r}")
        if self.test_flip is True and "flip" not in self.resolved_augment:
            raise ConfigError(f"test_flip: needs an augment that flips (crop+flip or flip), "
                              f"got {self.resolved_augment!r}: a model never trained on mirror "
                              "images would be judged on them")
        if self.warmup != AUTO and self.recipe.schedule == "cosine":
            raise ConfigError("warmup: the cosine schedule has no warm-up; use onecycle or "
                              "linear, or leave warmup 'auto'")

    @property
    def retrain(self) -> RetrainTrigger | None:
        """Why a retrain trains this run (None for any other run)."""
        if not self.retrain_id:
            return None
        return RetrainTrigger(self.retrain_id, self.retrain_reason, self.retrain_report)

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

    @functools.cached_property  # read by every training step's lr_at
    def recipe(self) -> Recipe:
        """The recipe fields, each "auto" replaced by the model's recipe value."""
        base = MODEL_RECIPES.get(self.model, DEFAULT_RECIPE)
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(Recipe)}
        resolved = {k: getattr(base, k) if v == AUTO else v for k, v in values.items()}
        if self.test_flip == AUTO:
            resolved["test_flip"] = base.test_flip and "flip" in self.resolved_augment
        return Recipe(**resolved)

    def defining_fields(self) -> dict[str, Any]:
        """The fields that define a run's result ("auto" resolved), not operational ones."""
        defining = {k: v for k, v in self.to_dict().items()
                    if k not in OPERATIONAL_FIELDS + NAMING_FIELDS}
        defining.update(dataclasses.asdict(self.recipe))
        defining["augment"] = self.resolved_augment
        for key in LATER_RECIPE_FIELDS:
            if defining[key] == getattr(DEFAULT_RECIPE, key):
                del defining[key]
        for key in RETRAIN_FIELDS:
            if not defining[key]:
                del defining[key]
        return defining

    @property
    def resolved_dataset_name(self) -> str:
        """The dataset's name: ``dataset_name``, else the kind (``dataset``)."""
        return self.dataset_name or self.dataset

    @property
    def data_location(self) -> str:
        """The store prefix of the data: ``data_prefix``, else ``datasets/<dataset name>``."""
        return dataset_prefix(self.resolved_dataset_name, self.data_prefix)

    @property
    def model_name(self) -> str:
        """``<model>-<dataset name>``: the store folder of this model's runs and versions."""
        return model_name(self.model, self.resolved_dataset_name)


@dataclass(frozen=True)
class RunIdentity:
    """What a run's result is a function of; ``run_id`` is its short hash.

    The config alone does not say it: the same ``dataset`` name may hold other images after a
    re-ingest, and the same ``model`` name other code after an upgrade. Never the world size
    or resources: the same run resumes after a rescale, a pod restart or a crash.
    """

    config: TrainConfig
    data_fingerprint: str
    """Digest of the data's content (trainer.data.loading: the CIFAR archive's sha256, the
    imagefolder manifest's, the generated digits'), equal on every rank."""
    model_revision: str
    """``<model>@<revision>`` (trainer.models.zoo.MODEL_REVISIONS): bumped when the code changes."""

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


def _check_choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}: {value!r} is not allowed; choose one of {', '.join(allowed)}")


def _check_int(key: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key}: must be an integer >= {minimum}, got {value!r}")


def _check_float(key: str, value: Any, *, low: float, high: float | None = None,
                 low_open: bool = False, high_open: bool = False, allowed: str = "") -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        ok = (value > low if low_open else value >= low)
        if high is not None:
            ok = ok and (value < high if high_open else value <= high)
    if not ok:
        lo = f"{'>' if low_open else '>='} {low}"
        hi = "" if high is None else f" and {'<' if high_open else '<='} {high}"
        also = f" {allowed}" if allowed else ""
        raise ConfigError(f"{key}: must be a number {lo}{hi}{also}, got {value!r}")
