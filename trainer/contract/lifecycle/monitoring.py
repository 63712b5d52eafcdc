"""What monitoring compares: a version's reference, the windows of what the app saw, and
the drift report of one check. Stdlib only: the trainer writes references, the app writes
windows and reports, ``python -m inference monitor`` and the retrain trigger read them.

Samples, not histograms: the two-sample tests need the values themselves. Every list is
bounded (``MAX_REFERENCE_SAMPLES``, ``MAX_WINDOW_PREDICTIONS``), so a file stays small
whatever the traffic. Readers ignore keys they do not know.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from trainer.contract.errors import MetaError
from trainer.contract.validate import is_number, known_fields, loads, record_from_json, require

SCHEMA = 1
CONFIDENCE, ENTROPY = "confidence", "entropy"
# Per-image input summaries (trainer.data.summaries computes them, for the reference and the
# app alike): cheap, and each moves with a common shift (light, contrast, noise, colour).
INPUT_FEATURES = ("brightness", "contrast", "sharpness", "red", "green", "blue", "saturation")
OUTPUT_FEATURES = (CONFIDENCE, ENTROPY)
FEATURES = (*OUTPUT_FEATURES, *INPUT_FEATURES)
MAX_REFERENCE_SAMPLES = 2000
MAX_WINDOW_PREDICTIONS = 1024


def _samples(values: Any, where: str, limit: int) -> dict[str, list[float]]:
    require(isinstance(values, dict), where, "a JSON object of feature -> numbers", values)
    for name, series in values.items():
        require(name in FEATURES, f"{where} feature", f"one of {', '.join(FEATURES)}", name)
        # type() and not isinstance: True is no number here (a window has hundreds of them
        # to check, on the app's monitoring thread: the cheapest exact test).
        require(isinstance(series, list) and len(series) <= limit
                and all(type(v) in (float, int) and math.isfinite(v) for v in series),
                f"{where} {name}", f"a list of at most {limit} finite numbers", series)
    return values


def _counts(values: Any, n_classes: int, where: str) -> None:
    require(isinstance(values, list) and len(values) == n_classes
            and all(type(v) is int and v >= 0 for v in values), where,
            f"{n_classes} counts >= 0 (one per class)", values)


@dataclass(frozen=True)
class Reference:
    """``reference.json`` of a version: its test split as the served program sees it."""

    classes: list[str]
    n: int
    """Test images the reference was computed on."""
    test_accuracy: float
    temperature: float
    """Fitted on the test split (NLL); calibrated probabilities are softmax(logits / T)."""
    ece_before: float
    """Expected calibration error (15 equal-width bins) of the raw confidences."""
    ece_after: float
    class_counts: list[int]
    """Predicted classes on the test split."""
    samples: dict[str, list[float]]
    """Calibrated confidence, entropy and each input feature, one value per image (a
    seeded subset of at most MAX_REFERENCE_SAMPLES images)."""
    schema: int = SCHEMA

    def __post_init__(self) -> None:
        require(isinstance(self.classes, list) and len(self.classes) >= 2
                and all(isinstance(c, str) for c in self.classes), "reference classes",
                "a list of at least 2 class names", self.classes)
        require(type(self.n) is int and self.n >= 1, "reference n", "an integer >= 1", self.n)
        for name in ("test_accuracy", "ece_before", "ece_after"):
            value = getattr(self, name)
            require(is_number(value) and 0 <= value <= 1, f"reference {name}",
                    "a number from 0 to 1", value)
        require(is_number(self.temperature) and self.temperature > 0, "reference temperature",
                "a number > 0", self.temperature)
        _counts(self.class_counts, len(self.classes), "reference class_counts")
        _samples(self.samples, "reference samples", MAX_REFERENCE_SAMPLES)

    @classmethod
    def from_json(cls, data: bytes | str) -> Reference:
        return record_from_json(cls, data, "reference.json")

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self)).encode()


@dataclass(frozen=True)
class PredictionWindow:
    """What one replica of the app saw of one version, between two flushes."""

    model: str
    version: str
    replica: str
    started_at: str
    ended_at: str
    """UTC, ISO 8601."""
    class_counts: list[int]
    samples: dict[str, list[float]]
    """One value per prediction of every FEATURE (never the image)."""
    schema: int = SCHEMA

    def __post_init__(self) -> None:
        for name in ("model", "version", "replica", "started_at", "ended_at"):
            require(isinstance(getattr(self, name), str) and bool(getattr(self, name)),
                    f"window {name}", "a non-empty string", getattr(self, name))
        require(isinstance(self.class_counts, list) and len(self.class_counts) >= 2,
                "window class_counts", "a list of counts per class", self.class_counts)
        _counts(self.class_counts, len(self.class_counts), "window class_counts")
        _samples(self.samples, "window samples", MAX_WINDOW_PREDICTIONS)
        require(all(len(s) == self.n for s in self.samples.values()), "window samples",
                f"{self.n} values per feature (one per prediction)",
                {k: len(v) for k, v in self.samples.items()})

    @property
    def n(self) -> int:
        return sum(self.class_counts)

    @classmethod
    def from_json(cls, data: bytes | str) -> PredictionWindow:
        return record_from_json(cls, data, "window")

    def to_json(self) -> bytes:
        # Its fields are plain JSON values already: no deep copy (dataclasses.asdict).
        return json.dumps({f.name: getattr(self, f.name)
                           for f in dataclasses.fields(self)}).encode()


@dataclass(frozen=True)
class FeatureTest:
    """One test of a check: its statistic, p-value and the p-value after the correction
    for testing every feature at once."""

    test: str
    """'chi-square' (predicted classes) or 'ks' (two-sample Kolmogorov-Smirnov)."""
    statistic: float
    p_value: float
    p_adjusted: float
    drifted: bool


@dataclass(frozen=True)
class DriftReport:
    """One check of recent predictions against the version's reference."""

    model: str
    version: str
    checked_at: str
    n: int
    """Predictions compared."""
    drift: bool
    estimated_accuracy: float
    """Mean calibrated confidence (CBPE-style: accuracy expected without labels)."""
    test_accuracy: float
    alpha: float
    tests: dict[str, FeatureTest]
    """Feature ('classes' or a FEATURE) -> its test."""
    class_counts: list[int] = field(default_factory=list)
    confidence_histogram: list[int] = field(default_factory=list)
    """Calibrated confidences of the predictions in 10 equal bins over [0, 1]."""
    windows: int = 1
    schema: int = SCHEMA

    def __post_init__(self) -> None:
        require(type(self.n) is int and self.n >= 1, "report n", "an integer >= 1", self.n)
        require(isinstance(self.drift, bool), "report drift", "true or false", self.drift)
        for name in ("estimated_accuracy", "test_accuracy", "alpha"):
            value = getattr(self, name)
            require(is_number(value) and 0 <= value <= 1, f"report {name}",
                    "a number from 0 to 1", value)

    @property
    def fired(self) -> list[str]:
        """The features whose test says drift, most significant first."""
        return sorted((k for k, t in self.tests.items() if t.drifted),
                      key=lambda k: self.tests[k].p_adjusted)

    def verdict(self) -> str:
        """The one line `python -m inference monitor` prints."""
        return (f"drift={'true' if self.drift else 'false'} "
                f"estimated_accuracy={self.estimated_accuracy:.4f} n={self.n}")

    @classmethod
    def from_json(cls, data: bytes | str) -> DriftReport:
        values = known_fields(cls, loads(data, "drift report"), "drift report")
        tests = values.get("tests")
        require(isinstance(tests, dict), "report tests", "a JSON object", tests)
        try:
            values["tests"] = {k: FeatureTest(**known_fields(FeatureTest, v, f"report test {k}"))
                               for k, v in tests.items()}
            return cls(**values)
        except TypeError as e:
            raise MetaError(f"drift report: {e}") from None

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), indent=1).encode()
