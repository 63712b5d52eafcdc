"""The published-version schema: ``meta.json``, ``metrics.json`` and the per-epoch record.

One definition each, used to write (the trainer, test fixtures, benchmarks) and to read
and validate (the app): construction validates, so an object that exists is valid.
Reading ignores keys it does not know, so an older app keeps reading versions that a
newer trainer wrote with extra fields. Stdlib only.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from typing import Any

from trainer.errors import MetaError
from trainer.layout import META_FILE, METRICS_FILE, MODEL_FILE, is_safe_relative
from trainer.urls import display_url


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _require(ok: bool, where: str, expected: str, got: Any) -> None:
    if not ok:
        raise MetaError(f"{where} must be {expected}, got {got!r:.200}")


def _known(cls, values: Any, where: str) -> dict[str, Any]:
    """The keys of ``values`` that are fields of ``cls``; every required field present."""
    _require(isinstance(values, dict), where, "a JSON object", type(values).__name__)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    required = [n for n, f in fields.items() if f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING]
    missing = [n for n in required if n not in values]
    if missing:
        raise MetaError(f"{where} lacks {', '.join(missing)}")
    return {k: v for k, v in values.items() if k in fields}


def _loads(data: bytes | str, where: str) -> Any:
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MetaError(f"{where} is not valid JSON: {e}") from None


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
        _require(type(self.epoch) is int and self.epoch >= 1, "epoch record: epoch",
                 "an integer >= 1", self.epoch)
        for name in ("train_loss", "train_acc", "test_loss", "test_acc", "img_per_s", "seconds"):
            _require(_number(getattr(self, name)), f"epoch record: {name}", "a number",
                     getattr(self, name))

    @classmethod
    def from_dict(cls, values: Any) -> EpochRecord:
        return cls(**_known(cls, values, "epoch record"))

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
            _require(_number(getattr(self, name)), f"meta.json metrics.{name}", "a number",
                     getattr(self, name))
        _require(type(self.epochs) is int and self.epochs >= 0, "meta.json metrics.epochs",
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
        _require(isinstance(self.classes, list) and all(isinstance(c, str) for c in self.classes),
                 "metrics.json classes", "a list of strings", self.classes)
        n = len(self.classes)
        _require(isinstance(self.confusion_matrix, list) and len(self.confusion_matrix) in (0, n)
                 and all(isinstance(r, list) and len(r) == n and all(type(v) is int for v in r)
                         for r in self.confusion_matrix),
                 "metrics.json confusion_matrix", f"a {n} x {n} list of integers",
                 self.confusion_matrix)
        _require(type(self.world_size) is int and self.world_size >= 1, "metrics.json world_size",
                 "an integer >= 1", self.world_size)

    @classmethod
    def from_json(cls, data: bytes | str) -> VersionMetrics:
        values = _known(cls, _loads(data, METRICS_FILE), METRICS_FILE)
        _require(isinstance(values["epochs"], list), "metrics.json epochs", "a list",
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
    """The run's data fingerprint (trainer.config.RunIdentity)."""
    model_revision: str = ""
    """The run's model-code revision, ``<model>@<n>``."""

    def __post_init__(self) -> None:
        _require(type(self.sequence) is int and self.sequence >= 0, "meta.json sequence",
                 "an integer >= 0", self.sequence)
        for name in ("model", "dataset", "run_id", "created_at", "data_fingerprint",
                     "model_revision"):
            _require(isinstance(getattr(self, name), str), f"meta.json {name}", "a string",
                     getattr(self, name))
        _require(isinstance(self.version, str) and bool(self.version) and "/" not in self.version,
                 "meta.json version", "a non-empty name without '/'", self.version)
        _require(isinstance(self.classes, list) and bool(self.classes)
                 and all(isinstance(c, str) for c in self.classes),
                 "meta.json classes", "a non-empty list of strings", self.classes)
        size = self.input_size
        _require(isinstance(size, list) and len(size) == 3
                 and all(type(v) is int and v > 0 for v in size) and size[0] in (1, 3),
                 "meta.json input_size", "[C, H, W] (C 1 or 3, positive integers)", size)
        for name in ("mean", "std"):
            values = getattr(self, name)
            _require(isinstance(values, list) and len(values) == size[0]
                     and all(_number(v) for v in values), f"meta.json {name}",
                     f"{size[0]} number(s)", values)
        _require(all(v > 0 for v in self.std), "meta.json std", "positive numbers", self.std)
        _require(isinstance(self.train_config, dict), "meta.json train_config", "a JSON object",
                 self.train_config)
        _require(isinstance(self.metrics, MetricsSummary), "meta.json metrics",
                 "a metrics summary", self.metrics)
        for name in ("files", "examples"):
            paths = getattr(self, name)
            _require(isinstance(paths, list) and all(isinstance(p, str) and is_safe_relative(p)
                                                     and p != META_FILE for p in paths),
                     f"meta.json {name}", "a list of relative paths inside the version folder",
                     paths)

    @classmethod
    def from_json(cls, data: bytes | str) -> VersionMeta:
        values = _known(cls, _loads(data, META_FILE), META_FILE)
        values["metrics"] = MetricsSummary(**_known(MetricsSummary, values["metrics"],
                                                    "meta.json metrics"))
        try:
            return cls(**values)
        except TypeError as e:  # a field of the wrong JSON type that slipped past _require
            raise MetaError(f"{META_FILE}: {e}") from None

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), indent=1).encode()

    @property
    def name(self) -> str:
        from trainer.layout import model_name

        return model_name(self.model, self.dataset)

    @property
    def downloads(self) -> list[str]:
        """Every file a reader fetches: the model first, then listed files and examples."""
        return list(dict.fromkeys([MODEL_FILE, *self.files, *self.examples]))


RUN_STATES = ("training", "publishing", "published", "interrupted")
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
    'interrupted' (stopped by Ctrl-C after ``epoch`` epochs; a restart resumes it)."""
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

    def __post_init__(self) -> None:
        for name in ("run_id", "model", "dataset", "started_at", "updated_at"):
            _require(isinstance(getattr(self, name), str) and bool(getattr(self, name)),
                     f"progress {name}", "a non-empty string", getattr(self, name))
        _require(self.state in RUN_STATES, "progress state", f"one of {', '.join(RUN_STATES)}",
                 self.state)
        _require(type(self.epochs) is int and self.epochs >= 1, "progress epochs",
                 "an integer >= 1", self.epochs)
        _require(type(self.epoch) is int and 0 <= self.epoch <= self.epochs, "progress epoch",
                 f"an integer from 0 to {self.epochs}", self.epoch)
        _require(type(self.world_size) is int and self.world_size >= 1, "progress world_size",
                 "an integer >= 1", self.world_size)
        _require(isinstance(self.history, list) and all(isinstance(e, EpochRecord)
                                                        for e in self.history),
                 "progress history", "a list of epoch records", self.history)
        epochs = [e.epoch for e in self.history]
        _require(epochs == sorted(set(epochs)) and all(e <= self.epoch for e in epochs),
                 "progress history", f"increasing epochs up to {self.epoch}", epochs)
        _require(_optional_str(self.version), "progress version", "null or a non-empty string",
                 self.version)
        for name in ("mlflow_run_id", "mlflow_experiment_id"):
            value = getattr(self, name)
            _require(value is None or _is_mlflow_id(value), f"progress {name}",
                     "null or an MLflow id (letters, digits, '_', '-')", value)
        _require(self.mlflow_url is None or (isinstance(self.mlflow_url, str)
                                             and self.mlflow_url.startswith(_WEB_SCHEMES)),
                 "progress mlflow_url", "null or an http(s) URL", self.mlflow_url)
        _require((self.state == "published") == (self.version is not None), "progress version",
                 "set exactly when the state is 'published'", self.version)

    @classmethod
    def from_json(cls, data: bytes | str) -> RunProgress:
        values = _known(cls, _loads(data, "progress record"), "progress record")
        history = values.get("history", [])
        _require(isinstance(history, list), "progress history", "a list", history)
        values["history"] = [EpochRecord.from_dict(e) for e in history]
        try:
            return cls(**values)
        except TypeError as e:
            raise MetaError(f"progress record: {e}") from None

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), indent=1).encode()

    def mlflow_page(self, base_url: str | None = None) -> str | None:
        """The run's MLflow UI page on ``base_url`` (the address the reader opens MLflow
        at), else as the trainer saw it; None while MLflow has not named the run."""
        if base_url is None:  # a record written before links were cleaned may hold some
            return display_url(self.mlflow_url) if self.mlflow_url else None
        if self.mlflow_run_id is None or self.mlflow_experiment_id is None:
            return None
        return mlflow_run_page(base_url, self.mlflow_experiment_id, self.mlflow_run_id)


def _record(cls, data: bytes | str, where: str):
    """Parse and validate one of the small trainer-written JSON records below."""
    try:
        return cls(**_known(cls, _loads(data, where), where))
    except TypeError as e:
        raise MetaError(f"{where}: {e}") from None


@dataclass(frozen=True)
class Latest:
    """``latest.json``: the version readers serve. Readers need only ``version``."""

    version: str
    sequence: int = 0
    """The version's meta.json sequence (0 if written before sequences existed)."""

    def __post_init__(self) -> None:
        _require(isinstance(self.version, str) and bool(self.version) and "/" not in self.version,
                 "latest.json version", "a non-empty name without '/'", self.version)
        _require(type(self.sequence) is int and self.sequence >= 0, "latest.json sequence",
                 "an integer >= 0", self.sequence)

    @classmethod
    def from_json(cls, data: bytes | str) -> Latest:
        return _record(cls, data, "latest.json")

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self)).encode()


@dataclass(frozen=True)
class VersionClaim:
    """``claim.json``: created exclusively before anything else in a version folder; the
    run that created it is the only one that writes there."""

    run_id: str
    writer: str
    """A random id of the claiming process: tells its own claim from another's after a
    retried request whose first attempt did succeed."""

    @classmethod
    def from_json(cls, data: bytes | str) -> VersionClaim:
        return _record(cls, data, "claim.json")

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self)).encode()


@dataclass(frozen=True)
class SequenceCounter:
    """``sequence.json``: the last publication sequence number of a model name handed out."""

    last: int
    writer: str

    def __post_init__(self) -> None:
        _require(type(self.last) is int and self.last >= 0, "sequence.json last",
                 "an integer >= 0", self.last)

    @classmethod
    def from_json(cls, data: bytes | str) -> SequenceCounter:
        return _record(cls, data, "sequence.json")

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self)).encode()


@dataclass(frozen=True)
class RunLeaseRecord:
    """``models/<name>/leases/<run_id>.json``: which job trains (or publishes) the run.

    Taken and renewed by conditional writes only (trainer.lease). Expiry is judged by the
    waiting job's own monotonic clock (the record, hence its tag, unchanged for
    ``ttl_s``), never by comparing pods' wall clocks; ``renewals`` makes every renewal a
    new content, so a store whose tag is a content hash sees it change too."""

    run_id: str
    holder: str
    """A random id of the holding process."""
    place: str
    """Where it runs: the pod's name in a cluster (a successor in the same pod, such as a
    restarted Master, takes over at once), else ``host:pid``."""
    renewals: int
    ttl_s: float
    released: bool = False
    """Set by an orderly exit: the next job takes the lease at once."""
    since: str = ""
    """UTC, ISO 8601, by the holder's clock: for people reading it only."""

    def __post_init__(self) -> None:
        for name in ("run_id", "holder", "place"):
            _require(isinstance(getattr(self, name), str) and bool(getattr(self, name)),
                     f"run lease {name}", "a non-empty string", getattr(self, name))
        _require(type(self.renewals) is int and self.renewals >= 0, "run lease renewals",
                 "an integer >= 0", self.renewals)
        _require(_number(self.ttl_s) and self.ttl_s > 0, "run lease ttl_s", "a number > 0",
                 self.ttl_s)
        _require(isinstance(self.released, bool), "run lease released", "true or false",
                 self.released)

    @classmethod
    def from_json(cls, data: bytes | str) -> RunLeaseRecord:
        return _record(cls, data, "run lease")

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self)).encode()
