"""Training throughput: bare compute vs the trainer vs the classic PIL/DataLoader recipe.

One run, same CIFAR-shaped data and model (resnet18-imagenet, batch 128 by default):
  (1) compute:  forward + backward + step on ready, normalized tensors
  (2) trainer:  the trainer's own epoch loop (batch augmentation on uint8 tensors)
  (3) baseline: torchvision CIFAR10-style dataset of PIL images, RandomCrop(32, padding=4)
                + RandomHorizontalFlip + ToTensor + Normalize through a DataLoader
and 2 DDP processes vs 1 process running the trainer loop. The last line is
machine-readable. Usage: python bench/train_throughput.py [--steps 30] [--data CIFAR.tar.gz]
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
import time

import torch
import torch.multiprocessing as mp
from classic_recipe import PilDataset  # bench/: the script's own directory
from torch import nn
from torchvision import transforms

from trainer.contract.config import TrainConfig
from trainer.data.loading import load_dataset
from trainer.models.zoo import build_model
from trainer.run import distributed
from trainer.run.loop import EpochRunner, autocast_for, precision_for
from trainer.run.train import build_training
from trainer.store import LocalStore


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnet18-imagenet")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10, help="measured steps per round")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured steps first")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; best counts")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                        help="the trainer's autocast (the baseline stays fp32)")
    parser.add_argument("--workers", type=int, default=2, help="baseline DataLoader workers")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the model of (1) and (2), as TrainConfig.compile")
    parser.add_argument("--data", help="optional CIFAR-10 python-version tar.gz instead of "
                                       "synthetic data")
    return parser.parse_args()


def load_bundle(args):
    if not args.data:
        size = (args.steps + args.warmup) * args.batch_size * 2  # enough for 2 processes
        return load_dataset("synthetic", None, synthetic_size=size, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        store = LocalStore(tmp)
        store.ensure_buckets()
        store.put_file("datasets/cifar10/cifar-10-python.tar.gz", args.data)
        return load_dataset("cifar10", store)


def bench_config(args) -> TrainConfig:
    return TrainConfig(dataset="synthetic", model=args.model, batch_size=args.batch_size,
                       epochs=1000, lr=0.05, log_every=10**6, precision=args.precision,
                       compile=args.compile)


def single_env() -> distributed.DistEnv:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return distributed.DistEnv(0, 1, 0, 1, device)


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class ComputeBench:
    """Upper bound: the trainer's model step on one ready, normalized batch, nothing else."""

    def __init__(self, args, bundle):
        env, cfg = single_env(), bench_config(args)
        model, self.optimizer = build_training(cfg, env, bundle)
        self.runner = EpochRunner(cfg, env, model, self.optimizer, bundle)
        self.model = self.runner.model  # compiled with --compile
        images = self.runner.normalize(self.runner.data.images[:args.batch_size])
        self.images = images.contiguous(memory_format=torch.channels_last)
        self.labels = self.runner.data.labels[:args.batch_size]
        self.device = env.device
        self.measure(args.warmup)

    def measure(self, steps: int) -> float:
        self.model.train()
        sync(self.device)
        start = time.perf_counter()
        for _ in range(steps):
            with autocast_for(self.device, self.runner.precision):
                loss = self.runner.criterion(self.model(self.images), self.labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        sync(self.device)
        return steps * len(self.labels) / (time.perf_counter() - start)


class TrainerBench:
    """The trainer's epoch loop, as `train` runs it (DDP-wrapped when world > 1)."""

    def __init__(self, args, bundle, env):
        cfg = bench_config(args)
        model, optimizer = build_training(cfg, env, bundle)
        if env.world_size > 1:
            model = nn.parallel.DistributedDataParallel(model)
        self.runner = EpochRunner(cfg, env, model, optimizer, bundle)
        self.epoch = 1
        self.measure(args.warmup)

    def measure(self, steps: int) -> float:
        images = seconds = 0.0
        while steps > 0:  # small datasets take several epochs to give `steps` steps
            stats = self.runner.train_epoch(self.epoch, max_steps=steps)
            done = round(stats["img_per_s"] * stats["train_seconds"])
            images, seconds = images + done, seconds + stats["train_seconds"]
            steps -= done // (self.runner.cfg.batch_size * self.runner.env.world_size)
            self.epoch += 1
        return images / seconds


class BaselineBench:
    """The classic recipe: PIL transforms per image in DataLoader workers, NCHW fp32."""

    def __init__(self, args, bundle):
        transform = transforms.Compose([
            transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
            transforms.ToTensor(), transforms.Normalize(bundle.mean, bundle.std)])
        dataset = PilDataset(bundle.train.images.numpy(), bundle.train.labels.numpy(), transform)
        self.loader = torch.utils.data.DataLoader(
            dataset, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
            drop_last=True)
        self.model = build_model(args.model, in_channels=3, num_classes=len(bundle.classes))
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.05, momentum=0.9,
                                         nesterov=True)
        self.criterion = nn.CrossEntropyLoss()
        self.warmup = args.warmup
        self.measure(args.warmup)

    def step(self, images, labels) -> None:
        loss = self.criterion(self.model(images), labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def measure(self, steps: int) -> float:
        """Steady-state img/s of ``steps`` steps. The workers start (and their queue fills,
        as it would in steady state) during untimed warm-up steps, and they stop when the
        round ends, so they never take CPU from the other benchmarks' rounds."""
        batches = iter(self.loader)
        try:
            for _ in range(min(self.warmup, 2)):
                self.step(*next(batches))
            start, count = time.perf_counter(), 0
            for _ in range(steps):
                images, labels = next(batches)
                self.step(images, labels)
                count += len(labels)
            return count / (time.perf_counter() - start)
        finally:
            del batches  # shuts the worker processes down


def _ddp_worker(rank: int, world: int, port: int, args, bundle, results) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                       "WORLD_SIZE": str(world), "RANK": str(rank), "LOCAL_RANK": str(rank),
                       "LOCAL_WORLD_SIZE": str(world)})
    os.environ.pop("OMP_NUM_THREADS", None)
    env = distributed.init_distributed()
    distributed.configure_cpu_threads(env)
    try:
        bench = TrainerBench(args, bundle, env)
        img_s = max(bench.measure(args.steps) for _ in range(args.rounds))
        if rank == 0:
            results.put(img_s)
    finally:
        distributed.cleanup()


def processes_img_s(args, bundle, world: int) -> float:
    """Global img/s of the trainer loop run by ``world`` local processes (env:// init)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    results = ctx.SimpleQueue()
    mp.spawn(_ddp_worker, args=(world, port, args, bundle, results), nprocs=world, join=True)
    return results.get()


def best_of_rounds(benches: dict, args) -> dict[str, float]:
    best = dict.fromkeys(benches, 0.0)
    for round_number in range(1, args.rounds + 1):
        for name, bench in benches.items():
            img_s = bench.measure(args.steps)
            best[name] = max(best[name], img_s)
            print(f"round {round_number}: {name:8s} {img_s:9.1f} img/s", flush=True)
    return best


def main() -> None:
    args = parse_args()
    torch.set_num_threads(distributed.usable_cpus())
    bundle = load_bundle(args)
    env = single_env()
    print(f"device={env.device} threads={torch.get_num_threads()} model={args.model} "
          f"batch={args.batch_size} steps={args.steps} rounds={args.rounds} "
          f"compile={args.compile} "
          f"images={len(bundle.train)} precision={precision_for(env.device, args.precision)}",
          flush=True)
    # Best of interleaved rounds: other processes on a shared machine slow some rounds
    # down, never speed one up, and interleaving spreads slow spells over all three.
    best = best_of_rounds({"compute": ComputeBench(args, bundle),
                           "trainer": TrainerBench(args, bundle, env),
                           "baseline": BaselineBench(args, bundle)}, args)
    compute, trainer, baseline = best["compute"], best["trainer"], best["baseline"]
    print(f"(1) compute  {compute:9.1f} img/s (forward+backward+step on ready tensors)")
    print(f"(2) trainer  {trainer:9.1f} img/s (trainer loop, batch augmentation on tensors)")
    print(f"(3) baseline {baseline:9.1f} img/s (PIL transforms + DataLoader, "
          f"{args.workers} workers, fp32 NCHW)", flush=True)
    if env.device.type == "cpu":
        one, two = processes_img_s(args, bundle, 1), processes_img_s(args, bundle, 2)
        print(f"trainer, 1 process {one:9.1f} img/s; 2 DDP processes {two:9.1f} img/s", flush=True)
    else:  # one GPU here: a 2-process comparison would share it
        one = two = float("nan")
    print(f"compute_img_s={compute:.1f} trainer_img_s={trainer:.1f} "
          f"baseline_img_s={baseline:.1f} trainer_vs_compute={trainer / compute:.3f} "
          f"trainer_vs_baseline={trainer / baseline:.3f} ddp2_vs_1={two / one:.3f}")


if __name__ == "__main__":
    main()
