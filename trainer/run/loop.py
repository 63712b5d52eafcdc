"""One epoch of training and one evaluation pass, from memory or streamed from shards.

Each rank trains its share of an epoch plan (trainer.data.streaming.plan) that every rank derives
from (seed, epoch): shares are disjoint without any communication, every rank runs the same
number of steps, and no sample is repeated or left out. Every ``checkpoint_every_steps``
steps the position in the plan goes to a checkpoint, from which the rest of the epoch
resumes, with any world size, exactly where it stopped. Each step's random draws
(augmentation) are seeded from the plan and the step alone (EpochPlan.step_seed), so with
the same world size the same plan goes on drawing the same numbers: the weights are those
of a run never stopped, bit for bit on CPU.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext

import torch
from torch import nn

from trainer.contract.config import TrainConfig
from trainer.contract.errors import ConfigError
from trainer.data.augment import BatchAugmenter, Normalizer
from trainer.data.streaming.batches import MemoryBatches, StreamBatches
from trainer.data.streaming.plan import EpochPlan
from trainer.data.streaming.position import EpochPosition, SampleTrace
from trainer.data.streaming.source import StreamedBundle
from trainer.limits.footprint import evaluation_batch_size
from trainer.models.zoo import served_model
from trainer.run import stopping
from trainer.run.distributed import DistEnv, all_reduce_sum

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
        self.data = (StreamBatches(bundle.sharded, device) if isinstance(bundle, StreamedBundle)
                     else MemoryBatches(bundle, device))
        self.num_classes = len(bundle.classes)
        self.mean, self.std = bundle.mean, bundle.std
        self.normalize = Normalizer(bundle.mean, bundle.std, device)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.recipe.label_smoothing)
        self.test_flip = cfg.recipe.test_flip
        # Resolved once: "auto" probes oneDNN, which the training step need not repeat.
        self.precision = precision_for(device, cfg.precision)
        # Set by train_epoch: SIGTERM came during the epoch's last step (every rank agreed).
        self.stop_after_epoch = False
        # Rank 0's reporter of the run's progress (fraction of its samples), after each step.
        self.on_progress: Callable[[float], None] | None = None

    def plan(self, epoch: int) -> EpochPlan:
        """Epoch ``epoch``'s plan from its start, for this world size."""
        return EpochPlan.fresh(self.data.shard_sizes, seed=self.cfg.seed, epoch=epoch,
                               world=self.env.world_size, batch_size=self.cfg.batch_size)

    def train_epoch(self, epoch: int, max_steps: int | None = None,
                    resume: EpochPosition | None = None,
                    save: Callable[[EpochPosition], None] | None = None) -> dict[str, float]:
        """Train epoch ``epoch`` (1-based), from ``resume`` if given; metrics are summed over
        every rank. Every ``checkpoint_every_steps`` steps, ``save`` (rank 0's) gets the
        position, the metric totals so far included."""
        cfg, env = self.cfg, self.env
        self.model.train()
        position = resume or EpochPosition(self.plan(epoch), 0)
        plan, first = position.plan, position.step
        steps = min(plan.steps, first + max_steps) if max_steps else plan.steps
        generator = torch.Generator(device=env.device)  # seeded every step, see _step
        totals = torch.zeros(3, dtype=torch.float64, device=env.device)  # loss sum, correct, n
        progress = Progress(cfg, env, epoch, plan.steps, first)
        trace = SampleTrace.open(env.rank, epoch, plan.done)
        start = time.perf_counter()
        batches = self.data.train(plan, env.rank, first, cfg.seed)
        vote = stopping.StopVote(env.device)  # SIGTERM: every rank stops after one step
        self.stop_after_epoch = False
        for step, (pixels, index, labels, ids) in zip(range(first + 1, steps + 1), batches):
            lr = lr_at(cfg, (epoch - 1 + plan.trained(step - 1) / plan.total) / cfg.epochs)
            # Each step's draws depend on the plan and the step alone: a stopped epoch
            # that resumes goes on drawing what it would have drawn (no state to carry).
            generator.manual_seed(plan.step_seed(cfg.seed, env.rank, step))
            loss = self._step(pixels, index, labels, lr, generator, totals)
            trace.write(step, ids)
            progress.update(step, loss, lr)
            if self.on_progress is not None:
                self.on_progress((epoch - 1 + plan.trained(step) / plan.total) / cfg.epochs)
            stop = vote.after_step()
            # The epoch's last step is not a mid-epoch position: a stop there ends the
            # epoch first (its checkpoint is the epoch's own).
            if step < plan.steps and (stop or cfg.checkpoint_every_steps
                                      and step % cfg.checkpoint_every_steps == 0):
                saved = self._checkpoint(position, step, totals,
                                         time.perf_counter() - start, save)
                if stop:
                    for opened in (batches, trace, progress):
                        opened.close()
                    stopped(epoch, step, saved, env)
            self.stop_after_epoch = self.stop_after_epoch or stop
        self.stop_after_epoch = vote.settle() or self.stop_after_epoch
        batches.close()
        trace.close()
        progress.close()
        all_reduce_sum(totals)
        seconds = time.perf_counter() - start + position.seconds
        loss_sum, correct, count = (totals.cpu() + torch.tensor(position.totals,
                                                                dtype=torch.float64)).tolist()
        return {"train_loss": loss_sum / count, "train_acc": correct / count,
                "img_per_s": count / seconds, "train_seconds": seconds}

    def _step(self, pixels, index, labels, lr: float, generator, totals) -> torch.Tensor:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        augment = BatchAugmenter(pixels, self.cfg.resolved_augment, self.mean, self.std,
                                 self.cfg.recipe.crop_padding)
        images = augment(index, generator)
        with autocast_for(self.env.device, self.precision):
            logits = self.model(images)
            loss = self.criterion(logits, labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            # Logged: plain cross-entropy, as test_loss (label smoothing is the optimizer's
            # objective only; both share one chart).
            totals[0] += nn.functional.cross_entropy(logits.detach().float(), labels,
                                                     reduction="sum").double()
            totals[1] += (logits.argmax(1) == labels).sum()
            totals[2] += len(labels)
        return loss

    def _checkpoint(self, position: EpochPosition, step: int, totals: torch.Tensor,
                    seconds: float, save) -> str | None:
        """Every rank: sum the totals so far (a collective); rank 0: ``save`` the position
        (returns the checkpoint's key there)."""
        summed = totals.clone()
        all_reduce_sum(summed)
        if save is None:
            return None
        so_far = [a + b for a, b in zip(position.totals, summed.tolist())]
        return save(EpochPosition(position.plan, step, so_far, position.seconds + seconds))

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batch_size: int | None = None
                 ) -> tuple[dict, list[list[int]]]:
        """Test loss/accuracy and confusion matrix (rows = true class), over all ranks."""
        # fp32, like the published model: the metrics describe what gets served. Batches that
        # the run's memory plan counts (trainer.limits.footprint.evaluation_batch_size).
        batch_size = batch_size or evaluation_batch_size(self.cfg.batch_size)
        model = served_model(model, self.test_flip).eval()
        env, classes = self.env, self.num_classes
        totals = torch.zeros(3, dtype=torch.float64, device=env.device)  # loss sum, correct, n
        confusion = torch.zeros(classes * classes, dtype=torch.float64, device=env.device)
        for pixels, labels in self.data.test(env.rank, env.world_size, batch_size):
            images = self.normalize(pixels)
            logits = model(images.contiguous(memory_format=torch.channels_last))
            predicted = logits.argmax(1)
            totals[0] += nn.functional.cross_entropy(logits, labels, reduction="sum").double()
            totals[1] += (predicted == labels).sum()
            totals[2] += len(labels)
            confusion += torch.bincount(labels * classes + predicted, minlength=classes ** 2)
        all_reduce_sum(totals)
        all_reduce_sum(confusion)
        count = totals[2].item()
        matrix = confusion.long().view(classes, classes).tolist()
        return {"test_loss": totals[0].item() / count, "test_acc": totals[1].item() / count}, matrix


def stopped(epoch: int, step: int, checkpoint: str | None, env: DistEnv) -> None:
    """Every rank, once the stop SIGTERM asked for is checkpointed: exit (143)."""
    if env.is_main:
        after = stopping.seconds_since_sigterm()
        log.info(json.dumps({"event": "terminated", "epoch": epoch, "step": step,
                             "checkpoint": checkpoint, "seconds_since_sigterm":
                             None if after is None else round(after, 3)}))
    raise SystemExit(stopping.TERM_EXIT)


class Progress:
    """A tqdm bar on a terminal (rank 0), else one JSON line every ``log_every`` steps."""

    def __init__(self, cfg: TrainConfig, env: DistEnv, epoch: int, steps: int, first: int = 0):
        self.cfg, self.epoch, self.steps = cfg, epoch, steps
        self.enabled = env.is_main
        self.bar = None
        if self.enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=steps, initial=first, desc=f"epoch {epoch}/{cfg.epochs}",
                            leave=False)

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

