"""The trainer image every workload runs: built here (TrainerImage) or prebuilt.

TrainerImage builds trainer/Dockerfile (context = repo root) and pushes it. The tag is a
hash of the build inputs, so a code change gives a new reference and every workload
rolls; pushed images are referenced by digest (repo@sha256:...). With `buildImage false`
no pulumi-docker resource exists at all: `prebuilt()` runs the configured reference.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_docker as docker

from trainer.contract.env import CPU_TORCH_VARIANT, GPU_TORCH_VARIANT

REPO_ROOT = Path(__file__).resolve().parents[2]
# What the Dockerfile copies: a change to any of these must produce a new image tag.
BUILD_INPUTS = ("trainer", "inference", ".dockerignore", "requirements-image.lock",
                "tools/lock/torch_split.py")
CUDA_VARIANT = GPU_TORCH_VARIANT
CPU_VARIANT = CPU_TORCH_VARIANT
# CPU images take torch from PyTorch's CPU index (no CUDA libraries); GPU images the lock's
# own torch from PyPI (empty index: hashed like the rest), which is the cu130 build.
TORCH_INDEX_URLS = {CPU_VARIANT: "https://download.pytorch.org/whl/cpu", CUDA_VARIANT: ""}


def torch_variant(gpus_per_worker: int) -> str:
    """The PyTorch wheel index to build against: CPU images must not carry CUDA."""
    return CUDA_VARIANT if gpus_per_worker > 0 else CPU_VARIANT


def build_args(variant: str) -> dict[str, str]:
    """trainer/Dockerfile's build args for a torch variant (BASE_IMAGE keeps its default)."""
    return {"TORCH_VARIANT": variant, "TORCH_INDEX_URL": TORCH_INDEX_URLS[variant]}


def source_hash(root: Path = REPO_ROOT, inputs: tuple[str, ...] = BUILD_INPUTS) -> str:
    """A short, stable hash of the files the image is built from (skips caches)."""
    digest = hashlib.sha256()
    for entry in inputs:
        base = root / entry
        files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
        for path in files:
            if "__pycache__" in path.parts or path.suffix == ".pyc":
                continue
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


@dataclass(frozen=True)
class ImageRef:
    """What pods run and how the kubelet pulls it."""

    ref: pulumi.Input[str]
    pull_policy: str


def prebuilt(reference: str) -> ImageRef:
    """A CI-built image, as given. By digest it never changes, so a node's copy is used;
    by tag every pod start pulls, so no node keeps an older image under a moved tag."""
    return ImageRef(reference, "IfNotPresent" if "@" in reference else "Always")


@dataclass
class TrainerImageArgs:
    repository: str
    push: bool
    gpus_per_worker: int
    context: Path = REPO_ROOT
    platform: str = "linux/amd64"


class TrainerImage(pulumi.ComponentResource):
    """`ref` is what pods run; `pull_policy` suits where the image lives."""

    ref: pulumi.Output[str]
    pull_policy: str

    def __init__(
        self, name: str, args: TrainerImageArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("trainstack:index:TrainerImage", name, None, opts)
        variant = torch_variant(args.gpus_per_worker)
        tag = f"{variant}-{source_hash(args.context)}"
        # Relative paths keep the state identical whichever directory `pulumi` runs from.
        context = os.path.relpath(args.context, os.getcwd())
        self.image = docker.Image(
            "trainer",
            image_name=f"{args.repository}:{tag}",
            build=docker.DockerBuildArgs(
                context=context,
                dockerfile=os.path.join(context, "trainer", "Dockerfile"),
                args=build_args(variant),
                platform=args.platform,
            ),
            skip_push=not args.push,
            opts=pulumi.ResourceOptions(parent=self),
        )
        if args.push:
            self.ref = self.image.repo_digest
            self.pull_policy = "IfNotPresent"
        else:
            # Not pushed (minikube: built inside its Docker daemon): the node already has
            # it under this unique tag, and must never try to pull it.
            self.ref = self.image.image_name
            self.pull_policy = "Never"
        self.register_outputs({"ref": self.ref, "torch_variant": variant})
