"""The drift check: recent predictions against the served version's reference.

Tests from scipy.stats, one per feature: chi-square on the predicted classes (expected
counts from the reference's class shares, classes expected fewer than MIN_EXPECTED times
pooled), the two-sample Kolmogorov-Smirnov test on calibrated confidence, entropy and each
input summary. Testing about ten features at once, their p-values are adjusted with
Benjamini-Hochberg (scipy.stats.false_discovery_control); drift when any adjusted p-value
is below ``alpha``. With no drift at all every null is true, and then BH bounds the chance
of any false alarm per check by ``alpha``.

The estimated accuracy is the mean calibrated confidence (CBPE-style, as NannyML's
estimator does for a calibrated classifier): what the test accuracy would be if the
confidences stay calibrated on the new data.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
from scipy import stats

from trainer.contract.errors import TrainstackError
from trainer.contract.lifecycle.monitoring import (
    CONFIDENCE,
    DriftReport,
    FeatureTest,
    PredictionWindow,
    Reference,
)

ALPHA = 0.01
MIN_EXPECTED = 5
MIN_PREDICTIONS = 20  # fewer say nothing a test could trust
CLASSES = "classes"


class NoData(TrainstackError):
    """Nothing to check: no reference, or no predictions of the version yet."""


def merged(windows: Sequence[PredictionWindow], n_classes: int
           ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The windows' class counts and samples together."""
    counts = np.zeros(n_classes, dtype=np.int64)
    samples: dict[str, list[float]] = {}
    for window in windows:
        if len(window.class_counts) != n_classes:
            continue  # written for another class list: not this version's predictions
        counts += np.asarray(window.class_counts)
        for feature, values in window.samples.items():
            samples.setdefault(feature, []).extend(values)
    return counts, {k: np.asarray(v, dtype=np.float64) for k, v in samples.items()}


def class_test(observed: np.ndarray, reference_counts: Sequence[int]) -> tuple[float, float]:
    """Chi-square statistic and p-value of the predicted classes against the reference's
    shares (a half count added to every class, so a class the reference never predicted
    does not divide by zero)."""
    shares = np.asarray(reference_counts, dtype=np.float64) + 0.5
    expected = shares / shares.sum() * observed.sum()
    small = expected < MIN_EXPECTED
    if small.any():  # pool rare classes into one bin, as the test's approximation needs
        observed = np.append(observed[~small], observed[small].sum())
        expected = np.append(expected[~small], expected[small].sum())
    if len(observed) < 2:
        return 0.0, 1.0
    result = stats.chisquare(observed, expected)
    return float(result.statistic), float(result.pvalue)


def check(reference: Reference, windows: Sequence[PredictionWindow], *, model: str,
          version: str, alpha: float = ALPHA, now: datetime | None = None) -> DriftReport:
    """One check of ``windows`` (any replicas) against ``reference``."""
    counts, samples = merged(windows, len(reference.classes))
    n = int(counts.sum())
    if n < MIN_PREDICTIONS:
        raise NoData(f"{model} version {version}: {n} prediction(s) recorded, at least "
                     f"{MIN_PREDICTIONS} are needed for a check")
    raw: dict[str, tuple[str, float, float]] = {}
    statistic, p_value = class_test(counts, reference.class_counts)
    raw[CLASSES] = ("chi-square", statistic, p_value)
    for feature, values in samples.items():
        base = reference.samples.get(feature)
        if base and len(values):
            # The asymptotic distribution: with ties (rounded values, confidences of 1.0)
            # 'auto' picks the exact one, ~3x the time, for no difference at these sizes.
            result = stats.ks_2samp(values, np.asarray(base, dtype=np.float64),
                                    method="asymp")
            raw[feature] = ("ks", float(result.statistic), float(result.pvalue))
    adjusted = stats.false_discovery_control([p for _, _, p in raw.values()], method="bh")
    tests = {feature: FeatureTest(test=test, statistic=round(stat, 6), p_value=float(p),
                                  p_adjusted=float(q), drifted=bool(q < alpha))
             for (feature, (test, stat, p)), q in zip(raw.items(), adjusted)}
    confidence = samples.get(CONFIDENCE, np.zeros(0))
    histogram = np.histogram(confidence, bins=10, range=(0.0, 1.0))[0]
    return DriftReport(
        model=model, version=version,
        checked_at=(now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"), n=n,
        drift=any(t.drifted for t in tests.values()),
        estimated_accuracy=round(float(confidence.mean()) if len(confidence) else 0.0, 6),
        test_accuracy=reference.test_accuracy, alpha=alpha, tests=tests,
        class_counts=counts.tolist(), confidence_histogram=histogram.tolist(),
        windows=len(windows))
