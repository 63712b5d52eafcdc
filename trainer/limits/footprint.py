"""What a training process holds at its peak: measured figures, and the memory a run needs.

A training process's peak resident memory (VmHWM) is, over everything bench/memory_costs.py
measured, no more than

    runtime + fixed[model] + per_pixel[model] x batch_size x image_size**2
      (+ peers[model] when it trains with other processes: DDP's buckets, gloo's buffers)
      (+ TRACKING_BYTES on rank 0 when MLflow tracking is on)
      + the data it holds

``runtime`` is what the process holds when it plans, before any data: the interpreter,
torch and the trainer's imports. The trainer reads its own (VmHWM at that moment: the torch
build it runs, CPU-only in the image, is part of it); the stack, which has no process to
read, takes RUNTIME_BYTES, measured with the torch build of the bench's machine. ``fixed``
is what the model adds at the peak: its weights, gradients and optimizer state, a
checkpoint, the export and the libraries publication imports; ``per_pixel`` the
activations of one training step (forward and backward, augmentation included) per image
pixel of a batch. Evaluation and the monitoring reference run at the training batch size
(:func:`evaluation_batch_size`), forward only, which holds less than a step. The data is
the whole decoded dataset when it is held in memory, or one shard and the samples a
streamed dataset keeps (trainer.data.streaming.source) when it streams.

A run needs that plus MARGIN of it plus MARGIN_BYTES: the same run measured again peaks up
to 90 MiB higher or lower (the allocator keeps what a step freed, publication's imports
land on top of it or not), and another CPU or more threads are not measured. The trainer
refuses to start a run that does not fit the memory it may use (trainer.data.budget),
naming what it needs and the stack key to raise; the stack refuses a configuration that
cannot fit (infra.config.combinations). Both read the figures here. Stdlib only: the
Pulumi program imports it without torch.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from trainer.contract.config import TrainConfig
from trainer.contract.env import TRACKING_URI_ENV

MIB = 1 << 20


@dataclass(frozen=True)
class ModelCost:
    """One model's measured figures (bench/memory_costs.py), in bytes."""

    fixed: int
    """More than the runtime at the peak, whatever the batch."""
    per_pixel: float
    """Bytes per pixel (height x width) of each image in a training batch."""
    peers: int
    """More per process when training with peers (DDP): gradient buckets, gloo's buffers."""


# Fitted by bench/memory_costs.py on 2026-12-07 (torch 2.14.1+cu130 on the CPU, 2 threads,
# fp32 and bf16, the larger of the two at each point; peers: 2 processes at 32 px, batch
# 32). Each line is on or above every run it was fitted to (at most 61 MiB above one).
# Re-run it when torch or a model changes, and paste its last lines here.
MODEL_COSTS = {
    "resnet18": ModelCost(fixed=435 * MIB, per_pixel=4877.0, peers=68 * MIB),
    "resnet18-imagenet": ModelCost(fixed=377 * MIB, per_pixel=594.0, peers=41 * MIB),
    "smallcnn": ModelCost(fixed=152 * MIB, per_pixel=1400.0, peers=5 * MIB),
    "fastcifar": ModelCost(fixed=150 * MIB, per_pixel=872.0, peers=4 * MIB),
}
# A trainer process when it plans (bench/memory_costs.py, the largest seen: 675-677 MiB).
RUNTIME_BYTES = 677 * MIB
# What MLflow tracking adds on rank 0 when MLFLOW_TRACKING_URI is set (its client, the
# logged model): bench/memory_costs.py --tracking-uri at 32 px, batch 64, fp32, against a
# local mlflow server: smallcnn 239 -> 304 MiB, resnet18 680 -> 793 MiB; the larger.
TRACKING_BYTES = 113 * MIB
# Kept free on top of the measured figures.
MARGIN = 0.10
MARGIN_BYTES = 64 * MIB
# Pixels per shard an ingest writes unless told (`--shard-mib`; the stack's ingest Job), and
# the training and test images a streamed dataset keeps for a model's data-dependent
# initialisation and the published examples (trainer.data.streaming.source).
DEFAULT_SHARD_BYTES = 128 * MIB
STREAM_SAMPLE_IMAGES = 1024
LABEL_BYTES = 8  # int64
# The stack's datasets at the one image size the stack trains them at (it has no image-size
# key: trainer.contract.config.TrainConfig.image_size's default; digits are 8 x 8), and what
# those in the trainer's image decode to in memory (an imagefolder's size is the user's).
STACK_IMAGE_SIZES = {"cifar10": 32, "imagefolder": 32, "digits": 8}
DECODED_BYTES = {"cifar10": 60_000 * 3 * 32 * 32, "digits": 1_797 * 1 * 8 * 8}


def streamed_bytes(image_bytes: int, largest_shard: int, samples: int) -> int:
    """What a process streaming a dataset holds of it: the largest shard (``largest_shard``
    images, one shard at a time) and the ``samples`` images it keeps."""
    return (largest_shard + samples) * (image_bytes + LABEL_BYTES)


def stack_data_bytes(dataset: str) -> tuple[int, str]:
    """The least a training process of the stack holds of ``dataset``, and what that is:
    CIFAR-10 and digits decoded in memory; an imagefolder (its size is the user's) streamed
    from shards the stack's ingest wrote."""
    if dataset in DECODED_BYTES:
        return DECODED_BYTES[dataset], f"{dataset} decoded in memory: {mib(DECODED_BYTES[dataset])}"
    image = 3 * STACK_IMAGE_SIZES[dataset] ** 2
    size = streamed_bytes(image, DEFAULT_SHARD_BYTES // image, 2 * STREAM_SAMPLE_IMAGES)
    return size, f"{dataset} streamed, a shard at a time: {mib(size)}"


def evaluation_batch_size(batch_size: int) -> int:
    """The batch evaluation and the monitoring reference run at: the training batch, whose
    forward pass without gradients holds less than a training step (measured with it)."""
    return batch_size


def mib(size: int) -> str:
    return f"{math.ceil(size / MIB):,} MiB"


def quantity(size: int) -> str:
    """``size`` as a memory quantity for memoryPerWorker, rounded up to 64 MiB."""
    return f"{math.ceil(size / (64 * MIB)) * 64}Mi"


@dataclass(frozen=True)
class Footprint:
    """What one training process of a run holds, but its data."""

    model: str
    image_size: int
    batch_size: int
    peers: bool = False
    """Whether it trains with other processes (world size > 1)."""
    tracking: bool = False
    """Whether it logs to MLflow (rank 0, MLFLOW_TRACKING_URI set)."""
    accelerator: bool = False
    """Training on a GPU: activations are in its memory, not the process's."""
    runtime: int = RUNTIME_BYTES
    """What the process holds before it holds any data (the trainer's own, read when it
    plans; RUNTIME_BYTES for the stack)."""

    @classmethod
    def of_run(cls, cfg: TrainConfig, *, world_size: int, is_main: bool, accelerator: bool,
               runtime: int | None) -> Footprint:
        """A process of the run ``cfg`` holding ``runtime`` bytes so far (None: unknown,
        RUNTIME_BYTES); only rank 0 tracks, when MLFLOW_TRACKING_URI is set."""
        return cls(cfg.model, cfg.image_size, cfg.batch_size, peers=world_size > 1,
                   tracking=is_main and bool(os.environ.get(TRACKING_URI_ENV)),
                   accelerator=accelerator,
                   runtime=RUNTIME_BYTES if runtime is None else runtime)

    def training_bytes(self) -> int:
        cost = MODEL_COSTS[self.model]
        activations = 0.0 if self.accelerator else (
            cost.per_pixel * self.batch_size * self.image_size ** 2)
        return math.ceil(self.runtime + cost.fixed + activations
                         + (cost.peers if self.peers else 0)
                         + (TRACKING_BYTES if self.tracking else 0))

    def need(self, data_bytes: int) -> int:
        """Bytes a process of this run needs while it holds ``data_bytes`` of data."""
        return math.ceil((self.training_bytes() + data_bytes) * (1 + MARGIN)) + MARGIN_BYTES

    def describe(self) -> str:
        where = " on a GPU" if self.accelerator else ""
        return (f"model {self.model} at {self.image_size} px, batch_size {self.batch_size}"
                f"{where}")


def shortfall(footprint: Footprint, need: int, available: int, holding: str,
              processes: int = 1) -> str:
    """The one line for a run that cannot fit: what it needs, what it has, what to change."""
    share = (f" (the pod's limit over its {processes} processes)" if processes > 1 else "")
    return (f"{footprint.describe()} needs about {mib(need)} of memory per training process "
            f"({holding}; measured figures in trainer/limits/footprint.py), but this process "
            f"may use {mib(available)}{share}: raise memoryPerWorker to at least "
            f"{quantity(need * processes)}, or lower batch_size or image_size")
