"""The drift check on its own: windows of known distributions against a reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inference.monitoring.drift import MIN_PREDICTIONS, NoData, check
from tests.inference.modelkit import CLASSES, MEAN, STD, ColourNet, colour_images
from trainer.contract.errors import MetaError
from trainer.contract.lifecycle.monitoring import PredictionWindow, Reference
from trainer.data.summaries import summarize
from trainer.publish.reference import build_reference, calibrated, entropy


@pytest.fixture(scope="module")
def reference() -> Reference:
    images, labels = colour_images(600)
    return build_reference(ColourNet(), torch.from_numpy(images), torch.from_numpy(labels),
                           CLASSES, MEAN, STD, 1.0)


def window_of(reference: Reference, images: np.ndarray, replica: str = "r1") -> PredictionWindow:
    """What the app records for ``images``, computed as the recorder does."""
    x = (torch.from_numpy(images).float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) \
        / torch.tensor(STD).view(1, 3, 1, 1)
    logits = ColourNet()(x).double().numpy()
    probabilities = calibrated(logits, reference.temperature)
    samples = {"confidence": probabilities.max(1), "entropy": entropy(probabilities),
               **summarize(images)}
    return PredictionWindow(
        model="colournet-colours", version="v1", replica=replica,
        started_at="2026-12-07T00:00:00Z", ended_at="2026-12-07T00:01:00Z",
        class_counts=np.bincount(probabilities.argmax(1), minlength=3).tolist(),
        samples={k: [round(float(v), 6) for v in values] for k, values in samples.items()})


def test_in_distribution_windows_rarely_alarm(reference):
    alarms = sum(check(reference, [window_of(reference, colour_images(256, seed=s)[0])],
                       model="colournet-colours", version="v1").drift
                 for s in range(100, 160))
    assert alarms <= 3, f"{alarms} false alarms in 60 in-distribution windows"


@pytest.mark.parametrize("shift, expected", [
    ({"brightness": 0.5}, "brightness"),
    ({"noise": 60.0}, "sharpness"),
])
def test_a_shift_is_detected_in_one_window_and_named(reference, shift, expected):
    images, _ = colour_images(256, seed=7, **shift)
    report = check(reference, [window_of(reference, images)], model="colournet-colours",
                   version="v1")
    assert report.drift and expected in report.fired, report.fired
    assert report.verdict().startswith("drift=true estimated_accuracy=")


def test_a_class_the_reference_never_predicted_is_drift_not_a_division_by_zero(reference):
    images, labels = colour_images(300, seed=3)
    only_red = images[labels == 0]
    report = check(reference, [window_of(reference, only_red)], model="colournet-colours",
                   version="v1")
    assert report.tests["classes"].drifted
    assert np.isfinite(report.tests["classes"].statistic)


def test_windows_of_several_replicas_add_up(reference):
    a = window_of(reference, colour_images(30, seed=1)[0], "a")
    b = window_of(reference, colour_images(40, seed=2)[0], "b")
    report = check(reference, [a, b], model="colournet-colours", version="v1")
    assert report.n == 70 and report.windows == 2


def test_too_few_predictions_is_no_data(reference):
    window = window_of(reference, colour_images(MIN_PREDICTIONS - 1, seed=1)[0])
    with pytest.raises(NoData, match="at least"):
        check(reference, [window], model="colournet-colours", version="v1")


def test_a_window_of_another_schema_is_refused_by_its_schema():
    with pytest.raises(MetaError):
        PredictionWindow.from_json(b'{"model": "m", "version": "v"}')
    with pytest.raises(MetaError):
        PredictionWindow.from_json(b"not json")


def test_the_reference_calibrates_an_overconfident_model():
    images, labels = colour_images(600, seed=5)
    wrong = np.random.default_rng(5).random(len(labels)) < 0.2  # a fifth mislabelled: the
    labels[wrong] = (labels[wrong] + 1) % 3  # model is right 80% of the time, and sure
    sharp = build_reference(ColourNet(scale=40.0), torch.from_numpy(images),
                            torch.from_numpy(labels), CLASSES, MEAN, STD, 0.8)
    assert sharp.temperature > 1.5  # softened
    assert sharp.ece_after < sharp.ece_before
    assert Reference.from_json(sharp.to_json()) == sharp
