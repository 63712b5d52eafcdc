"""A version's monitoring reference: its test split as the published program sees it.

Computed at publication from the served model (test-time flip included) on a seeded subset
of the test split, before latest.json moves (trainer.contract.lifecycle.monitoring.Reference):
the predicted classes, the calibrated confidence and entropy of each prediction, the input
summaries of each image, and the temperature that calibrates the confidences (fitted by
NLL on the same images; the expected calibration error before and after is recorded).
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax
from torch import nn

from trainer.contract.lifecycle.monitoring import (
    CONFIDENCE,
    ENTROPY,
    MAX_REFERENCE_SAMPLES,
    Reference,
)
from trainer.data.augment import Normalizer
from trainer.data.summaries import summarize

log = logging.getLogger(__name__)

ECE_BINS = 15
# Images per forward pass unless the caller says (publication: the run's evaluation batch,
# trainer.limits.footprint.evaluation_batch_size, which its memory plan counts).
BATCH = 256
# Real models fit 0.8-3. A test split the model gets entirely right has its NLL falling
# as T -> 0 (every confidence -> 1, every entropy -> 0: nothing left to compare); the
# lower bound keeps the calibrated outputs informative, the upper one the fit finite.
TEMPERATURE_BOUNDS = (0.25, 10.0)


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray,
                               bins: int = ECE_BINS) -> float:
    """ECE: |accuracy - confidence| per equal-width confidence bin, weighted by its size."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        members = index == b
        if members.any():
            total += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(total)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T > 0 minimising the NLL of softmax(logits / T) (scipy's bounded Brent search
    on log T)."""
    def nll(log_t: float) -> float:
        scaled = log_softmax(logits / math.exp(log_t), axis=1)
        return float(-scaled[np.arange(len(labels)), labels].mean())

    low, high = (math.log(b) for b in TEMPERATURE_BOUNDS)
    result = minimize_scalar(nll, bounds=(low, high), method="bounded")
    return float(math.exp(result.x))


def calibrated(logits: np.ndarray, temperature: float) -> np.ndarray:
    return softmax(logits / temperature, axis=1)


def entropy(probabilities: np.ndarray) -> np.ndarray:
    """Shannon entropy in nats of each row."""
    return -(probabilities * np.log(np.clip(probabilities, 1e-12, 1.0))).sum(axis=1)


@torch.no_grad()
def _logits(model: nn.Module, images: torch.Tensor, mean, std, batch: int) -> np.ndarray:
    device = next(model.parameters()).device
    normalize = Normalizer(mean, std, device)
    was_training = model.training
    model.eval()
    try:
        out = [model(normalize(images[i:i + batch].to(device))).float().cpu()
               for i in range(0, len(images), batch)]
    finally:
        model.train(was_training)
    return torch.cat(out).double().numpy()


def build_reference(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                    classes: list[str], mean, std, test_accuracy: float,
                    seed: int = 0, batch_size: int = BATCH) -> Reference:
    """The reference of the served ``model`` on the test split (``uint8`` N x C x H x W)."""
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.permutation(len(labels))[:MAX_REFERENCE_SAMPLES])
    subset = images[torch.from_numpy(chosen)]
    truth = labels[torch.from_numpy(chosen)].numpy()
    logits = _logits(model, subset, mean, std, batch_size)
    temperature = fit_temperature(logits, truth)
    raw, probabilities = softmax(logits, axis=1), calibrated(logits, temperature)
    samples = {CONFIDENCE: probabilities.max(axis=1), ENTROPY: entropy(probabilities),
               **summarize(subset.numpy())}
    reference = Reference(
        classes=list(classes), n=len(chosen), test_accuracy=round(float(test_accuracy), 6),
        temperature=round(temperature, 6),
        ece_before=round(expected_calibration_error(raw, truth), 6),
        ece_after=round(expected_calibration_error(probabilities, truth), 6),
        class_counts=np.bincount(probabilities.argmax(axis=1),
                                 minlength=len(classes)).tolist(),
        samples={k: [round(float(v), 6) for v in values] for k, values in samples.items()})
    log.info("monitoring reference: %d test images, temperature %.3f, ECE %.4f -> %.4f",
             reference.n, reference.temperature, reference.ece_before, reference.ece_after)
    return reference
