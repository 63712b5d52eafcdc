"""Batch augmentation on uint8 tensors: random crop with zero padding, flip, normalize.

Works on whole batches with a few tensor ops (no per-image PIL work), on CPU or GPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def crop_padding_for(image_size: int) -> int:
    """4 pixels for 32-px images (the classic CIFAR recipe), scaled for other sizes."""
    return max(1, round(4 * image_size / 32))


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Pad each image with zeros and cut a random HxW window out of it.

    The result is channels_last-strided for free: the gather yields B x H x W x C and
    is permuted back, not copied.
    """
    b, _, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    offsets = torch.randint(0, 2 * padding + 1, (2, b), generator=generator,
                            device=generator.device).to(images.device)
    rows = offsets[0, :, None] + torch.arange(h, device=images.device)  # B x H
    cols = offsets[1, :, None] + torch.arange(w, device=images.device)  # B x W
    batch = torch.arange(b, device=images.device)[:, None, None]
    # Advanced indices split by a slice put the indexed dims first: B x H x W x C.
    cropped = padded[batch, :, rows[:, :, None], cols[:, None, :]]
    return cropped.permute(0, 3, 1, 2)


def random_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flip = torch.rand(images.shape[0], generator=generator,
                      device=generator.device).to(images.device) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(3), images)


class Normalizer:
    """uint8 pixels -> float32 (x/255 - mean) / std, as one multiply-add."""

    def __init__(self, mean, std, device: torch.device | str = "cpu"):
        mean = torch.tensor(mean, dtype=torch.float32, device=device)[None, :, None, None]
        std = torch.tensor(std, dtype=torch.float32, device=device)[None, :, None, None]
        self.scale = 1.0 / (255.0 * std)
        self.shift = -mean / std

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.shift, images.float(), self.scale)


class BatchAugmenter:
    """The training-time transform: which augmentations, then normalization."""

    def __init__(self, augment: str, mean, std, image_size: int,
                 device: torch.device | str = "cpu"):
        self.crop = "crop" in augment
        self.flip = "flip" in augment
        self.padding = crop_padding_for(image_size)
        self.normalize = Normalizer(mean, std, device)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.crop:
            images = random_crop(images, self.padding, generator)
        if self.flip:
            images = random_flip(images, generator)
        return self.normalize(images).contiguous(memory_format=torch.channels_last)
