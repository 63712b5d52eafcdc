"""One epoch of training and one evaluation pass, on tensors already in memory.

Each rank trains on its own shard of a per-epoch permutation that every rank derives
from (seed, epoch), so shards are disjoint without any communication, and the same
run can resume with a different world size. Like torch's DistributedSampler, the
permutation is padded by wrapping around to a multiple of the world size, so every rank
gets ceil(n / world) examples and runs the same number of steps, and no example is
left out of an epoch.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sys
import time
from contextlib import nullcontext

import torch
from torch import nn

from trainer.augment import BatchAugmenter, Normalizer
from trainer.config import TrainConfig
from trainer.distributed import DistEnv, all_reduce_sum
from trainer.errors import ConfigError
from trainer.models import served_model

log = logging.getLogger(__name__)


def lr_at(cfg: TrainConfig, progress: float) -> float:
    """LR at ``progress`` in [0, 1] of the whole run (independent of steps per epoch)."""
    recipe = cfg.recipe
    if recipe.schedule != "cosine":
        warmup = recipe.warmup
        if progress < warmup:
            return cfg.lr * (0.04 + 0.96 * progress / warmup)
        progress = (progress - warmup) / (1 - warmup)
        if recipe.schedule == "linear":
            return cfg.lr * (1.0 - min(1.0, progress))
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def shard_indices(n: int, *, seed: int, epoch: int, rank: int, world: int) -> torch.Tensor:
    """This rank's ceil(n / world) examples of epoch ``epoch``'s permutation of ``range(n)``,
    padded by wrapping around (the last ranks repeat at most world - 1 examples)."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    per_rank = math.ceil(n / world)
    order = torch.randperm(n, generator=generator)
    if per_rank * world > n:
        order = order.repeat(math.ceil(per_rank * world / n))[:per_rank * world]
    return order[rank * per_rank:(rank + 1) * per_rank]


def batches_of(indices: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Every index, in batches of at most ``batch_size`` and at least half of it.

    BatchNorm normalizes a batch by the batch's own statistics and folds them into the
    running statistics that evaluation and the exported model use; a batch of a few images
    gives noisy ones. So a last partial batch of at least half a batch is kept as it is, and
    a smaller remainder is split evenly with the full batch before it (two batches of at
    least half a batch each). A shard smaller than a batch is one batch.
    """
    if len(indices) <= batch_size:
        return [indices]
    batches = list(indices.split(batch_size))
    if len(batches[-1]) * 2 < batch_size:
        merged = torch.cat(batches[-2:])
        batches[-2:] = [merged[:len(merged) // 2], merged[len(merged) // 2:]]
    return batches


def precision_for(device: torch.device, precision: str = "auto") -> str:
    """'auto' = bf16 on CUDA and on CPUs with native bf16 kernels (AVX512-BF16/AMX), else fp32."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16"
    return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"


def autocast_for(device: torch.device, precision: str = "auto"):
    """bf16 autocast (weights, optimizer state and the exported model stay fp32)."""
    if precision_for(device, precision) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def require_compiler(device: torch.device) -> None:
    """torch.compile builds its kernels with the machine's compiler: Triton's launchers
    with a C compiler on a GPU, Inductor's kernels with a C++ compiler on a CPU. Without
    one it fails deep inside the first step; say so before training starts instead."""
    # What each looks for: Triton $CC, gcc or clang; Inductor on Linux $CXX or g++.
    names = ("gcc", "clang") if device.type == "cuda" else ("g++",)
    chosen = os.environ.get("CC" if device.type == "cuda" else "CXX")
    if not any(shutil.which(name) for name in ((chosen,) if chosen else names)):
        raise ConfigError(
            f"compile: true needs a {'C' if device.type == 'cuda' else 'C++'} compiler on "
            f"{device.type} ({chosen or ' / '.join(names)}): none on PATH. The CUDA image "
            "trainstack builds has gcc; on a CPU image set compile: false (it pays on GPUs)",
            key="compile")


class EpochRunner:
    """Trains and evaluates ``model`` (DDP-wrapped or not) on a loaded dataset bundle."""

    def __init__(self, cfg: TrainConfig, env: DistEnv, model: nn.Module,
                 optimizer: torch.optim.Optimizer, bundle):
        self.cfg, self.env, self.optimizer = cfg, env, optimizer
        # Compiled for training steps only: evaluation, checkpoints and the export take the
        # module itself (a compiled wrapper's state_dict names differ).
        if cfg.compile:
            require_compiler(env.device)
        self.model = torch.compile(model) if cfg.compile else model
        device = env.device
        self.train_images = bundle.train.images.to(device)
        self.train_labels = bundle.train.labels.to(device)
        self.test_images = bundle.test.images.to(device)
        self.test_labels = bundle.test.labels.to(device)
        self.num_classes = len(bundle.classes)
        recipe = cfg.recipe
        self.augment = BatchAugmenter(self.train_images, cfg.resolved_augment,
                                      bundle.mean, bundle.std, recipe.crop_padding)
        self.normalize = Normalizer(bundle.mean, bundle.std, device)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
        self.test_flip = recipe.test_flip
        # Resolved once: "auto" probes oneDNN, which the training step need not repeat.
        self.precision = precision_for(device, cfg.precision)

    def train_epoch(self, epoch: int, max_steps: int | None = None) -> dict[str, float]:
        """Train epoch ``epoch`` (1-based); metrics are summed over every rank."""
        cfg, env = self.cfg, self.env
        self.model.train()
        shard = shard_indices(len(self.train_labels), seed=cfg.seed, epoch=epoch,
                              rank=env.rank, world=env.world_size)
        batches = batches_of(shard.to(env.device), cfg.batch_size)[:max_steps]
        generator = torch.Generator(device=env.device)
        generator.manual_seed((cfg.seed * 1_000_003 + epoch) * 4096 + env.rank)
        totals = torch.zeros(3, dtype=torch.float64, device=env.device)  # loss sum, correct, n
        totals[2] = sum(len(index) for index in batches)
        progress = Progress(cfg, env, epoch, len(batches))
        start = time.perf_counter()
        for step, index in enumerate(batches):
            lr = lr_at(cfg, (epoch - 1 + step / len(batches)) / cfg.epochs)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            images = self.augment(index, generator)
            labels = self.train_labels[index]
            with autocast_for(env.device, self.precision):
                logits = self.model(images)
                loss = self.criterion(logits, labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            with torch.no_grad():
                # Logged: plain cross-entropy, as test_loss (label smoothing is the
                # optimizer's objective only; both share one chart).
                totals[0] += nn.functional.cross_entropy(logits.detach().float(), labels,
                                                         reduction="sum").double()
                totals[1] += (logits.argmax(1) == labels).sum()
            progress.update(step + 1, loss, lr)
        progress.close()
        all_reduce_sum(totals)
        seconds = time.perf_counter() - start
        loss_sum, correct, count = totals.tolist()
        return {"train_loss": loss_sum / count, "train_acc": correct / count,
                "img_per_s": count / seconds, "train_seconds": seconds}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batch_size: int | None = None
                 ) -> tuple[dict, list[list[int]]]:
        """Test loss/accuracy and confusion matrix (rows = true class), over all ranks."""
        # fp32, like the published model: the metrics describe what gets served. Batches of
        # the training batch size: a forward pass without gradients then needs less memory
        # than a training step, so evaluation never raises the process's peak.
        batch_size = batch_size or self.cfg.batch_size
        model = served_model(model, self.test_flip).eval()
        env, classes = self.env, self.num_classes
        shard = torch.arange(env.rank, len(self.test_labels), env.world_size, device=env.device)
        totals = torch.zeros(2, dtype=torch.float64, device=env.device)  # loss sum, correct
        confusion = torch.zeros(classes * classes, dtype=torch.float64, device=env.device)
        for index in shard.split(batch_size):
            images = self.normalize(self.test_images[index])
            labels = self.test_labels[index]
            logits = model(images.contiguous(memory_format=torch.channels_last))
            predicted = logits.argmax(1)
            totals[0] += nn.functional.cross_entropy(logits, labels, reduction="sum").double()
            totals[1] += (predicted == labels).sum()
            confusion += torch.bincount(labels * classes + predicted, minlength=classes ** 2)
        all_reduce_sum(totals)
        all_reduce_sum(confusion)
        count = len(self.test_labels)
        matrix = confusion.long().view(classes, classes).tolist()
        return {"test_loss": totals[0].item() / count, "test_acc": totals[1].item() / count}, matrix


class Progress:
    """A tqdm bar on a terminal (rank 0), else one JSON line every ``log_every`` steps."""

    def __init__(self, cfg: TrainConfig, env: DistEnv, epoch: int, steps: int):
        self.cfg, self.epoch, self.steps = cfg, epoch, steps
        self.enabled = env.is_main
        self.bar = None
        if self.enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=steps, desc=f"epoch {epoch}/{cfg.epochs}", leave=False)

    def update(self, step: int, loss: torch.Tensor, lr: float) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(1)
            if step % 10 == 0:
                self.bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.4f}")
        elif step % self.cfg.log_every == 0:
            log.info(json.dumps({"event": "progress", "epoch": self.epoch, "step": step,
                                 "steps": self.steps, "loss": round(loss.item(), 4),
                                 "lr": round(lr, 6)}))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
