"""The model zoo: a CIFAR-stem ResNet-18, the stock ResNet-18, a small CNN and fastcifar.

No pretrained weights anywhere: the pods have no internet and results must be
reproducible from the config alone.
"""

from __future__ import annotations

import hashlib
import inspect

from torch import nn
from torchvision.models import resnet18 as tv_resnet18

from trainer.contract.config import MODELS
from trainer.models.fastcifar import FastCIFAR

__all__ = ["MODELS", "MODEL_REVISIONS", "FastCIFAR", "FlipAveraged", "SmallCNN",
           "architecture_signature", "build_model", "model_revision", "resnet18_cifar",
           "resnet18_imagenet", "served_model"]

# Part of every run's identity (trainer.contract.config.RunIdentity): bump a model's revision whenever
# a change to its code changes what training computes, so no run resumes or republishes
# weights of the old code. tests/trainer/models/test_models.py records each revision's
# architecture_signature and fails when the code changes without a bump.
MODEL_REVISIONS = {"resnet18": 1, "resnet18-imagenet": 1, "smallcnn": 1, "fastcifar": 1}


def model_revision(name: str) -> str:
    """``<model>@<revision>``: what a run's identity records of the model code."""
    if name not in MODEL_REVISIONS:
        raise ValueError(f"model {name!r} is not known; choose one of {', '.join(MODELS)}")
    return f"{name}@{MODEL_REVISIONS[name]}"


def architecture_signature(name: str) -> str:
    """sha256 of a model's layers (their repr), every parameter and buffer name, shape and
    dtype, and the source of the project's own module classes (forward and init code), for
    1- and 3-channel inputs."""
    digest = hashlib.sha256()
    for in_channels in (1, 3):
        model = build_model(name, in_channels=in_channels, num_classes=10)
        digest.update(repr(model).encode())
        for key, tensor in model.state_dict().items():
            digest.update(f"{key}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        for module in model.modules():
            if type(module).__module__.split(".")[0] == "trainer":
                digest.update(inspect.getsource(type(module)).encode())
    return digest.hexdigest()


def build_model(name: str, *, in_channels: int, num_classes: int) -> nn.Module:
    builders = {
        "resnet18": resnet18_cifar,
        "resnet18-imagenet": resnet18_imagenet,
        "smallcnn": SmallCNN,
        "fastcifar": FastCIFAR,
    }
    if name not in builders:
        raise ValueError(f"model {name!r} is not known; choose one of {', '.join(MODELS)}")
    return builders[name](in_channels=in_channels, num_classes=num_classes)


def resnet18_imagenet(*, in_channels: int, num_classes: int) -> nn.Module:
    """Stock torchvision ResNet-18 (7x7/2 stem + max-pool), what older pipelines used."""
    model = tv_resnet18(weights=None, num_classes=num_classes)
    if in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model


def resnet18_cifar(*, in_channels: int, num_classes: int) -> nn.Module:
    """ResNet-18 with the CIFAR stem: small images keep their resolution (3x3/1, no pool)."""
    model = tv_resnet18(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def _conv_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SmallCNN(nn.Module):
    """Three conv blocks; pooling adapts to the input so 1x8x8 and 3x32x32 both work."""

    def __init__(self, *, in_channels: int, num_classes: int, width: int = 32):
        super().__init__()
        self.features = nn.Sequential(
            _conv_bn(in_channels, width),
            _conv_bn(width, 2 * width),
            nn.MaxPool2d(2, ceil_mode=True),
            _conv_bn(2 * width, 4 * width),
            nn.MaxPool2d(2, ceil_mode=True),
            _conv_bn(4 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


class FlipAveraged(nn.Module):
    """Test-time flip: the mean of the logits of each image and of its mirror image."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return (self.model(x) + self.model(x.flip(-1))) * 0.5


def served_model(model: nn.Module, test_flip: bool) -> nn.Module:
    """What evaluation measures and publication exports (TrainConfig.recipe.test_flip): one
    definition, so the published metrics describe the published program."""
    return FlipAveraged(model) if test_flip else model
