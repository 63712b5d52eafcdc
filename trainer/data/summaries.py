"""Cheap per-image input summaries: what monitoring compares besides the model's outputs.

One function for the version's reference (computed by the trainer on its test split) and
the app (on each request's pixels), so both measure exactly the same thing on the same
pixels (trainer.data.pixels makes them). Each summary moves with a common kind of shift:
light (brightness), contrast, noise or blur (sharpness), colour cast (red, green, blue,
saturation). Grey images have no colour summaries.
"""

from __future__ import annotations

import numpy as np

from trainer.contract.lifecycle.monitoring import INPUT_FEATURES

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
GREY_FEATURES = ("brightness", "contrast", "sharpness")


def features_for(channels: int) -> tuple[str, ...]:
    """The input summaries an image of ``channels`` channels has."""
    return INPUT_FEATURES if channels == 3 else GREY_FEATURES


def summarize(images: np.ndarray) -> dict[str, np.ndarray]:
    """``uint8`` ``N x C x H x W`` pixels -> feature -> N values in [0, 1]."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected uint8 N x C x H x W with C 1 or 3, got {images.shape}")
    x = images.astype(np.float32) / 255.0
    luma = x[:, 0] if x.shape[1] == 1 else np.einsum("nchw,c->nhw", x, _LUMA)
    flat = luma.reshape(len(luma), -1)
    gradient = (np.abs(np.diff(luma, axis=1)).mean(axis=(1, 2))
                + np.abs(np.diff(luma, axis=2)).mean(axis=(1, 2))) / 2 if min(
        luma.shape[1:]) > 1 else np.zeros(len(luma), np.float32)
    found = {"brightness": flat.mean(axis=1), "contrast": flat.std(axis=1),
             "sharpness": gradient}
    if x.shape[1] == 3:
        means = x.mean(axis=(2, 3))
        found.update(red=means[:, 0], green=means[:, 1], blue=means[:, 2])
        high, low = x.max(axis=1), x.min(axis=1)
        found["saturation"] = np.where(high > 0, (high - low) / np.maximum(high, 1e-6),
                                       0.0).reshape(len(x), -1).mean(axis=1)
    return {name: found[name].astype(np.float64) for name in features_for(x.shape[1])}
