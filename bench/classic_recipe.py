"""The CIFAR-10 recipe users run today, as bench/time_to_accuracy.py's baseline (a).

Stock torchvision ResNet-18 (7x7 stem, max-pool), SGD lr 0.1 with momentum 0.9 and weight
decay 5e-4, a cosine schedule over every step, batch 128, fp32; per image in 2 DataLoader
workers: PIL image -> RandomCrop(32, padding=4) -> RandomHorizontalFlip -> ToTensor ->
Normalize; the test set through the same loader without augmentation. The archive is
decoded with the trainer's CIFAR reader, the same code and cost as the trainer's.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision import models, transforms

from trainer.data import cifar


class PilDataset(torch.utils.data.Dataset):
    """What torchvision.datasets.CIFAR10 does per item: HWC uint8 array -> PIL -> transform."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.data = images.transpose(0, 2, 3, 1)
        self.targets = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index):
        return self.transform(Image.fromarray(self.data[index])), self.targets[index]


def loaders(archive: str) -> tuple:
    """Train and test DataLoaders over the archive's images, decoded once into arrays."""
    with open(archive, "rb") as f:
        train_x, train_y, test_x, test_y, _ = cifar.read_archive(f, archive)
    normalize = [transforms.ToTensor(), transforms.Normalize(cifar.MEAN, cifar.STD)]
    augment = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()]
    # persistent_workers: the workers start once, not every epoch (the seed's best case).
    loader = {"num_workers": 2, "persistent_workers": True}
    train = torch.utils.data.DataLoader(
        PilDataset(train_x, train_y, transforms.Compose(augment + normalize)),
        batch_size=128, shuffle=True, **loader)
    test = torch.utils.data.DataLoader(
        PilDataset(test_x, test_y, transforms.Compose(normalize)), batch_size=256, **loader)
    return train, test


def train_classic(archive: str, epochs: int, seed: int,
                  report: Callable[[int, float], None]) -> None:
    """Train and evaluate every epoch; ``report(epoch, test_accuracy)`` after each."""
    torch.manual_seed(seed)
    # On a GPU node the recipe runs there (the DataLoader still decodes on the CPU).
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    train, test = loaders(archive)
    model = models.resnet18(weights=None, num_classes=10).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * len(train))
    criterion = nn.CrossEntropyLoss()
    for epoch in range(1, epochs + 1):
        model.train()
        for images, labels in train:
            images, labels = images.to(device), labels.to(device)
            loss = criterion(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        model.eval()
        correct = total = 0
        with torch.no_grad():
            for images, labels in test:
                images, labels = images.to(device), labels.to(device)
                correct += (model(images).argmax(1) == labels).sum().item()
                total += len(labels)
        report(epoch, correct / total)
