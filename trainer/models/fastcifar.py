"""``fastcifar``: a small VGG-like net for fast CIFAR training on few cores.

Written from what the published fast CIFAR-10 training records describe (their code does
not carry over, the architecture facts do): a frozen 2x2 patch-whitening stem initialised
from the training images, three blocks of conv3x3 -> max-pool -> BatchNorm -> GELU ->
conv3x3 -> BatchNorm -> GELU (widths 32, 64, 128), a global max-pool and a bias-free
linear head whose logits are scaled down. About 0.3 M parameters and 1/24 of the CIFAR-stem
ResNet-18's multiply-adds per image; its recipe (trainer.contract.config.MODEL_RECIPES) adds label
smoothing, a learning rate falling linearly from its peak, lighter translation and test-time
flip averaging.

The whitening stem is data-dependent: :meth:`FastCIFAR.init_from_data` sets it once, at
the start of a fresh run, from rank 0's images (trainer.run.train broadcasts the result), and a
resumed run takes it from the checkpoint like every other weight. Any image of at least
2 x 2 pixels works (trainer.contract.config rejects smaller ones): max-pools round up.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

WIDTHS = (32, 64, 128)
WHITEN_KERNEL = 2
# Added to the patch covariance's eigenvalues before taking 1/sqrt: keeps the directions of
# almost no variance (flat patches) from being blown up into noise.
WHITEN_EPS = 5e-4
# Logits scaled down: with a bias-free head on max-pooled features, large initial logits
# slow the first steps (the records use 1/9).
LOGIT_SCALE = 1 / 9


def _conv(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1, bias=False)


def _block(cin: int, cout: int) -> list[nn.Module]:
    return [_conv(cin, cout), nn.MaxPool2d(2, ceil_mode=True), nn.BatchNorm2d(cout), nn.GELU(),
            _conv(cout, cout), nn.BatchNorm2d(cout), nn.GELU()]


class FastCIFAR(nn.Module):
    """Whitening stem, three conv blocks, global max-pool, scaled bias-free linear head."""

    def __init__(self, *, in_channels: int, num_classes: int):
        super().__init__()
        # One output per sign of each eigenvector of the patch covariance (2 C k k).
        stem = 2 * in_channels * WHITEN_KERNEL ** 2
        self.whiten = nn.Conv2d(in_channels, stem, WHITEN_KERNEL, bias=True)
        self.whiten.weight.requires_grad_(False)  # set from the data, never trained
        layers: list[nn.Module] = [nn.GELU()]
        cin = stem
        for width in WIDTHS:
            layers += _block(cin, width)
            cin = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.classifier = nn.Linear(cin, num_classes, bias=False)
        self.identity_init()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.pool(self.features(self.whiten(x))).flatten(1)
        return self.classifier(features) * LOGIT_SCALE

    @torch.no_grad()
    def identity_init(self) -> None:
        """Each 3x3 conv starts as the identity on its first min(in, out) channels (the rest
        keep their random init): a deep stack of them then trains from the first step."""
        for module in self.features.modules():
            if isinstance(module, nn.Conv2d):
                shared = min(module.in_channels, module.out_channels)
                nn.init.dirac_(module.weight[:shared])

    @torch.no_grad()
    def init_from_data(self, batches: Iterable[torch.Tensor]) -> None:
        """Set the stem to whiten the k x k patches of ``batches`` (normalized N x C x H x W
        floats, summed batch by batch so memory stays bounded for large images): filters are
        the patch covariance's eigenvectors scaled by 1/sqrt(eigenvalue + eps), each with
        both signs (GELU keeps mostly one side). Deterministic for the same images."""
        k, channels = WHITEN_KERNEL, self.whiten.in_channels
        size = channels * k * k
        products = torch.zeros(size, size, dtype=torch.float64)
        sums = torch.zeros(size, dtype=torch.float64)
        count = 0
        for images in batches:
            if images.shape[1] != channels or min(images.shape[-2:]) < k:
                raise ValueError(f"images of shape {tuple(images.shape[1:])} do not fit the "
                                 f"stem ({channels} channels, at least {k}x{k} px)")
            patches = images.float().unfold(2, k, 1).unfold(3, k, 1)  # N C H' W' k k
            patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, size).double().cpu()
            products += patches.T @ patches
            sums += patches.sum(0)
            count += len(patches)
        if count == 0:
            raise ValueError("no images to whiten the stem with")
        mean = sums / count
        covariance = products / count - torch.outer(mean, mean)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending
        eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.flip(1)
        filters = eigenvectors.T / torch.sqrt(eigenvalues.clamp(min=0) + WHITEN_EPS)[:, None]
        filters = filters.reshape(-1, channels, k, k).to(self.whiten.weight)
        self.whiten.weight.copy_(torch.cat([filters, -filters]))
        self.whiten.bias.zero_()
