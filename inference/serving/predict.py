"""Upload bytes -> model pixels -> normalized batch -> answers.

Pixels come from the one function the trainer uses too (trainer.data.pixels.to_pixels), at the
published ``meta.json`` input size; normalization follows ``meta.json`` exactly as the
trainer defines the input: pixels scaled to [0, 1], then ``(x - mean) / std``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from inference.serving.budget import MemoryBudget, OverBudget
from trainer.contract.schema import VersionMeta
from trainer.data import pixels

DEFAULT_MAX_PIXELS = pixels.MAX_PIXELS


class BadImage(ValueError):
    """The upload is not an image we can read (answered with 400)."""

    status = 400


class ImageTooLarge(BadImage):
    """Too many pixels, or more decode memory than the budget (answered with 413)."""

    status = 413


def decode(data: bytes, meta: VersionMeta, max_pixels: int = DEFAULT_MAX_PIXELS,
           budget: MemoryBudget | None = None, draft: bool = True) -> np.ndarray:
    """Upload bytes -> ``uint8`` ``C x H x W`` pixels for ``meta``'s model, or a BadImage.

    With a ``budget``, the decode first reserves the memory its header says it needs.
    ``draft=False``: every pixel decoded (trainer.data.pixels), the benchmark's baseline.
    """
    shape = meta.input_size
    try:
        if budget is None:
            return pixels.to_pixels(data, shape, max_pixels, draft)
        cost = pixels.probe(data, shape, max_pixels, draft).decode_bytes
        with budget.reserve(cost):
            return pixels.to_pixels(data, shape, max_pixels, draft)
    except (pixels.ImageTooLarge, OverBudget) as e:
        raise ImageTooLarge(f"the uploaded image is too large: {e}") from None
    except pixels.ImageError as e:
        raise BadImage(f"the uploaded file cannot be used: {e}") from None


def normalize(batch: torch.Tensor, meta: VersionMeta) -> torch.Tensor:
    """``uint8`` ``N x C x H x W`` (any device) -> float32, normalized as in training."""
    mean = torch.tensor(meta.mean, dtype=torch.float32, device=batch.device).view(1, -1, 1, 1)
    std = torch.tensor(meta.std, dtype=torch.float32, device=batch.device).view(1, -1, 1, 1)
    return (batch.float().div_(255.0) - mean) / std


def answer(probabilities: list[float], classes: list[str]) -> dict[str, Any]:
    """One image's ``{prediction, confidence, probabilities}``."""
    best = max(range(len(classes)), key=probabilities.__getitem__)
    return {
        "prediction": classes[best],
        "confidence": probabilities[best],
        "probabilities": dict(zip(classes, probabilities)),
    }
