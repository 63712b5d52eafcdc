"""Batch augmentation, sharding and the LR schedule: the pieces of the input pipeline."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from trainer.contract.config import TrainConfig
from trainer.data.augment import BatchAugmenter, Normalizer
from trainer.models.zoo import build_model
from trainer.run.loop import lr_at


def test_random_crop_cuts_windows_of_the_zero_padded_images_picked():
    images = torch.randint(1, 256, (64, 3, 8, 8), dtype=torch.uint8)
    augmenter = BatchAugmenter(images, "crop", (0.5,) * 3, (0.25,) * 3)
    assert augmenter.padding == 1
    index = torch.randperm(64, generator=torch.Generator().manual_seed(1))[:48]
    cropped = augmenter.pixels(index, torch.Generator().manual_seed(0))
    assert cropped.shape == (48, 3, 8, 8) and cropped.dtype == torch.uint8
    padded = F.pad(images, (1, 1, 1, 1))
    offsets_seen = set()
    for i, crop in zip(index, cropped):
        windows = [(dy, dx) for dy in range(3) for dx in range(3)
                   if torch.equal(padded[i, :, dy:dy + 8, dx:dx + 8], crop)]
        assert windows, "every crop is a window of its own padded image"
        offsets_seen.add(windows[0])
    assert len(offsets_seen) > 5, "offsets vary across the batch"


def test_random_flip_mirrors_about_half_the_batch_and_nothing_else():
    images = torch.randint(0, 256, (400, 1, 4, 4), dtype=torch.uint8)
    augmenter = BatchAugmenter(images, "flip", (0.5,), (0.25,))
    assert augmenter.padding == 0
    index = torch.arange(400)
    flipped = augmenter.pixels(index, torch.Generator().manual_seed(0))
    mirrored = [torch.equal(f, i.flip(2)) and not torch.equal(f, i)
                for f, i in zip(flipped, images)]
    unchanged = [torch.equal(f, i) for f, i in zip(flipped, images)]
    assert all(m or u for m, u in zip(mirrored, unchanged))
    assert 150 < sum(mirrored) < 250


def test_no_augmentation_returns_the_images_picked():
    images = torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8)
    augmenter = BatchAugmenter(images, "none", (0.5,) * 3, (0.25,) * 3)
    index = torch.tensor([3, 1, 4])
    assert torch.equal(augmenter.pixels(index, torch.Generator()), images[index])


def test_normalizer_scales_then_standardizes():
    images = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 1, 1, 3)
    out = Normalizer((0.2,), (0.5,))(images)
    torch.testing.assert_close(out.flatten(), torch.tensor([-0.4, 0.0, 1.6]))


def test_augmenter_returns_normalized_channels_last_floats():
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    out = BatchAugmenter(images, "crop+flip", (0.5,) * 3, (0.25,) * 3)(
        torch.arange(8), torch.Generator().manual_seed(1))
    assert out.dtype == torch.float32 and out.shape == (8, 3, 32, 32)
    assert out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("schedule", ["onecycle", "linear", "cosine"])
def test_lr_schedule_peaks_at_lr_and_anneals_to_zero(schedule):
    cfg = TrainConfig(lr=0.2, schedule=schedule)
    values = [lr_at(cfg, p / 100) for p in range(101)]
    assert max(values) == pytest.approx(0.2, rel=1e-3)
    assert values[-1] == pytest.approx(0.0, abs=1e-9)
    if schedule != "cosine":
        assert values[0] < 0.05 * 0.2 + 1e-9


def test_linear_schedule_warms_up_for_its_share_then_falls_in_a_straight_line():
    cfg = TrainConfig(lr=0.2, schedule="linear", warmup=0.1)
    assert lr_at(cfg, 0.05) == pytest.approx(0.2 * (0.04 + 0.96 * 0.5))
    assert lr_at(cfg, 0.1) == pytest.approx(0.2)
    assert lr_at(cfg, 0.55) == pytest.approx(0.1)
    assert lr_at(cfg, 0.775) == pytest.approx(0.05)
    no_warmup = TrainConfig(lr=0.2, schedule="linear", warmup=0.0)
    assert lr_at(no_warmup, 0.0) == pytest.approx(0.2) and lr_at(no_warmup, 0.5) == pytest.approx(0.1)


def test_onecycle_keeps_the_schedule_of_older_trainers():
    """Runs configured before `warmup` existed must train exactly as they did (0.15)."""
    cfg = TrainConfig(lr=0.1)
    old = [0.1 * (0.04 + 0.96 * p / 0.15) if p < 0.15
           else 0.1 * 0.5 * (1 + math.cos(math.pi * min(1.0, (p - 0.15) / 0.85)))
           for p in (i / 200 for i in range(201))]
    assert [lr_at(cfg, i / 200) for i in range(201)] == old


def test_crop_padding_is_a_share_of_the_image_side():
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    assert BatchAugmenter(images, "crop", (0.5,) * 3, (0.25,) * 3).padding == 4
    assert BatchAugmenter(images, "crop", (0.5,) * 3, (0.25,) * 3, 0.0625).padding == 2
    small = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
    assert BatchAugmenter(small, "crop", (0.5,), (0.25,), 0.0625).padding == 1


@pytest.mark.parametrize("name, shape", [("smallcnn", (1, 8, 8)), ("smallcnn", (3, 32, 32)),
                                         ("resnet18", (3, 32, 32)),
                                         ("resnet18-imagenet", (3, 32, 32)),
                                         ("fastcifar", (1, 8, 8)), ("fastcifar", (3, 32, 32)),
                                         ("fastcifar", (3, 2, 2)), ("fastcifar", (3, 45, 45))])
def test_models_take_channels_and_classes(name, shape):
    model = build_model(name, in_channels=shape[0], num_classes=7).eval()
    with torch.no_grad():
        assert model(torch.randn(2, *shape)).shape == (2, 7)


def test_cifar_stem_keeps_resolution_and_imagenet_stem_does_not():
    cifar = build_model("resnet18", in_channels=3, num_classes=10)
    imagenet = build_model("resnet18-imagenet", in_channels=3, num_classes=10)
    assert cifar.conv1.kernel_size == (3, 3) and cifar.conv1.stride == (1, 1)
    assert isinstance(cifar.maxpool, torch.nn.Identity)
    assert imagenet.conv1.kernel_size == (7, 7) and imagenet.conv1.stride == (2, 2)
