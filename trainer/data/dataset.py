"""The in-memory dataset every reader produces: uint8 splits, classes and statistics.

Shared by the readers (trainer.data.loading for cifar10/digits/synthetic, trainer.data.imagefolder).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Split:
    """A whole split, decoded once."""

    images: torch.Tensor  # uint8, N x C x H x W, contiguous
    labels: torch.Tensor  # int64, N

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class DatasetBundle:
    name: str
    train: Split
    test: Split
    classes: list[str]
    mean: tuple[float, ...]  # per channel, for pixels scaled to [0, 1]
    std: tuple[float, ...]
    fingerprint: str
    """``sha256:<hex>`` of the content decoded (or a generator's revision)."""
    shard_sizes: list[int] | None = None
    """Images per shard of the training split when it was read from shards (in order), so
    an epoch visits them as a streamed run would (trainer.data.streaming.plan); None: one shard."""


def split_of(images: np.ndarray, labels: np.ndarray) -> Split:
    """A Split of uint8 images and integer labels (copied only if not already contiguous)."""
    return Split(torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8)),
                 torch.from_numpy(np.asarray(labels, dtype=np.int64)))


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 ``N x C x H x W`` images scaled to [0, 1].

    Exact, from a 256-bin histogram per channel summed in integers, over chunks of about a
    million pixels: no float copy of the images (which would be 8x their size).
    """
    array = images.numpy()
    channels, pixels = array.shape[1], array.shape[2] * array.shape[3]
    counts = np.zeros((channels, 256), dtype=np.int64)
    chunk = max(1, (1 << 20) // pixels)
    for start in range(0, len(array), chunk):
        for c in range(channels):
            counts[c] += np.bincount(array[start:start + chunk, c].reshape(-1), minlength=256)
    values = range(256)
    mean, std = [], []
    for c in range(channels):
        hist = [int(v) for v in counts[c]]
        n = sum(hist)
        s1 = sum(v * h for v, h in zip(values, hist))
        s2 = sum(v * v * h for v, h in zip(values, hist))
        m = s1 / n / 255.0
        sd = ((n * s2 - s1 * s1) / (n * n)) ** 0.5 / 255.0  # integers until here: exact
        mean.append(round(m, 6))
        # A constant channel would divide by zero when normalizing; leave it unscaled.
        std.append(round(sd, 6) if sd > 1e-6 else 1.0)
    return tuple(mean), tuple(std)


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, test)``: the same share of every class held out, fixed by ``seed``.

    Classes with a single example stay in train (there is nothing to hold out).
    """
    rng = np.random.default_rng(seed)
    train, test = [], []
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        n_test = round(len(idx) * test_fraction) if len(idx) > 1 else 0
        n_test = min(max(n_test, 1 if len(idx) > 1 else 0), len(idx) - 1)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))
