"""Time to accuracy on CPU: the recipe users run today vs trainstack resnet18 vs fastcifar.

One run, the same CIFAR-10-format archive and the same cores for all three:
  (a) seed:     bench/classic_recipe.py: stock torchvision ResNet-18, SGD lr 0.1
                (momentum 0.9, wd 5e-4) with a cosine schedule, batch 128, PIL
                RandomCrop(32, padding=4) + flip + ToTensor + Normalize through a
                DataLoader (2 workers), fp32, 10 epochs
  (b) resnet18: trainstack's trainer with its defaults (CIFAR-stem ResNet-18, batch 128,
                lr 0.1, 10 epochs)
  (c) fast:     trainstack's trainer with fastcifar and the dev stack's settings
Each runs in a fresh process, one after the other. Its clock starts once torch is imported
(the same cost for all three, printed) and before it reads the archive, so every time
counts data preparation, training, per-epoch checkpoints (trainer) and a test-set
evaluation after every epoch; the trainer's publication after the last epoch is not
training and is not counted. Prints test accuracy against time for each, writes a PNG plot
and ends with one machine-readable line. Usage:
  python bench/time_to_accuracy.py --data cifar-10-python.tar.gz [--plot out.png]
  python bench/time_to_accuracy.py --quick    # tiny generated archive, a smoke test
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
import os
import pickle
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

IMPORT_START = time.perf_counter()  # imports are timed: every recipe needs them

import numpy as np
import torch
from classic_recipe import train_classic  # bench/: the script's own directory

from trainer.contract.config import TrainConfig
from trainer.contract.layout import cifar10_key, dataset_prefix
from trainer.limits.cpus import usable_cpus
from trainer.run.train import run_training
from trainer.store import LocalStore

IMPORT_SECONDS = time.perf_counter() - IMPORT_START
RECIPES = ("seed", "resnet18", "fast")
LABELS = {"seed": "(a) seed recipe: stock ResNet-18, PIL + DataLoader",
          "resnet18": "(b) trainstack resnet18", "fast": "(c) trainstack fastcifar"}
# The trainer's settings of (b) and (c) as `make demo` and the dev stack run them (2 workers,
# batch size per worker); epochs come from the command line.
TRAINER_CONFIGS = {"resnet18": {"model": "resnet18", "batch_size": 128, "lr": 0.1},
                   "fast": {"model": "fastcifar", "batch_size": 32, "lr": 0.2}}
RESULT_PREFIX = "RESULT "


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="a CIFAR-10 python-version tar.gz")
    parser.add_argument("--quick", action="store_true",
                        help="a tiny generated archive and 1-2 epochs: checks the bench runs")
    parser.add_argument("--plot", default="time_to_accuracy.png", help="PNG to write")
    parser.add_argument("--seed-epochs", type=int, default=10)
    parser.add_argument("--resnet18-epochs", type=int, default=10)
    parser.add_argument("--fast-epochs", type=int, default=8)
    parser.add_argument("--trainer-processes", type=int,
                        help="DDP processes of (b) and (c): default 2 of one thread each on "
                             "CPU, as `make demo` runs them (1: one process using every "
                             "core); 1 on a GPU (pass a GPU-sized --fast-batch-size there)")
    parser.add_argument("--fast-batch-size", type=int, default=TRAINER_CONFIGS["fast"]["batch_size"],
                        help="(c)'s batch size per process")
    parser.add_argument("--fast-lr", type=float, default=TRAINER_CONFIGS["fast"]["lr"])
    parser.add_argument("--seed", type=int, default=0, help="seeds every recipe")
    parser.add_argument("--only", choices=RECIPES, action="append",
                        help="run only these recipes (tuning; no summary line)")
    parser.add_argument("--run", choices=RECIPES, help=argparse.SUPPRESS)  # one child process
    parser.add_argument("--store", help=argparse.SUPPRESS)
    parser.add_argument("--epochs", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.run and not args.quick and not args.data:
        parser.error("give --data PATH (a CIFAR-10 python-version tar.gz) or --quick")
    if args.trainer_processes is None:  # ranks of one node each take a GPU of their own
        args.trainer_processes = 1 if torch.cuda.is_available() else 2
    return args


class Clock:
    """Wall and CPU seconds of this process since the recipe started."""

    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def report(self, recipe: str, epoch: int, acc: float) -> None:
        """One point of a recipe's curve, for the parent process."""
        print(RESULT_PREFIX + json.dumps({
            "recipe": recipe, "epoch": epoch, "acc": acc, "s": time.perf_counter() - self.wall,
            "cpu_s": time.process_time() - self.cpu}), flush=True)


class EpochReporter(logging.Handler):
    """Turns the trainer's structured epoch lines into curve points, timed as they come."""

    def __init__(self, recipe: str, clock: Clock):
        super().__init__()
        self.recipe, self.clock = recipe, clock

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith('{"event": "epoch"'):
            epoch = json.loads(message)
            self.clock.report(self.recipe, epoch["epoch"], epoch["test_acc"])


def run_trainer_recipe(recipe: str, store_dir: str, values: dict) -> None:
    """(b) and (c): the trainer's own `train` command, in this process."""
    cfg = TrainConfig.from_dict(values)
    store = LocalStore(store_dir)
    logging.getLogger("trainer").addHandler(EpochReporter(recipe, Clock()))
    run_training(cfg, store)


def run_child(args: argparse.Namespace) -> None:
    # The trainer's INFO lines reach EpochReporter; only warnings reach the terminal.
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger().handlers[0].setLevel(logging.WARNING)
    logging.getLogger("trainer").setLevel(logging.INFO)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"imports {IMPORT_SECONDS:.2f} s (not counted)", file=sys.stderr, flush=True)
    if args.run == "seed":
        torch.set_num_threads(usable_cpus())
        clock = Clock()
        train_classic(args.data, args.epochs, args.seed,
                      lambda epoch, acc: clock.report("seed", epoch, acc))
    else:
        run_trainer_recipe(args.run, args.store, json.loads(args.config))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def trainer_config(recipe: str, args, epochs: int) -> dict:
    """The TrainConfig of (b) or (c) (unused by the seed recipe)."""
    values = {"dataset": "cifar10", "epochs": epochs, "seed": args.seed, "log_every": 10**6,
              **TRAINER_CONFIGS.get(recipe, {})}
    if recipe == "fast":
        values.update(batch_size=args.fast_batch_size, lr=args.fast_lr)
    return values


def child_commands(recipe: str, args, store_dir: str, epochs: int) -> list[tuple[list, dict]]:
    """The process(es) of one recipe: the seed alone; the trainer as 1 or `--fast-world`
    ranks with the environment torchrun gives them (one thread each when several)."""
    command = [sys.executable, __file__, "--run", recipe, "--epochs", str(epochs),
               "--seed", str(args.seed),
               "--data", args.data, "--store", store_dir,
               "--config", json.dumps(trainer_config(recipe, args, epochs))]
    # One process: it sizes its threads from the usable CPUs, as in a pod.
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "OMP_NUM_THREADS")}
    world = 1 if recipe == "seed" else args.trainer_processes
    if world == 1:
        return [(command, env)]
    port = str(free_port())
    return [(command, {**env, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port,
                       "WORLD_SIZE": str(world), "RANK": str(rank), "LOCAL_RANK": str(rank),
                       "LOCAL_WORLD_SIZE": str(world), "OMP_NUM_THREADS": "1"})
            for rank in range(world)]


def run_recipe(recipe: str, args, store_dir: str, epochs: int) -> list[dict]:
    """Run one recipe's process(es) to the end; its curve points from rank 0's output."""
    procs = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
             for command, env in child_commands(recipe, args, store_dir, epochs)]
    points = []
    try:
        for line in procs[0].stdout:
            if line.startswith(RESULT_PREFIX):
                point = json.loads(line[len(RESULT_PREFIX):])
                points.append(point)
                print(f"{recipe:8s} epoch {point['epoch']:2d}  test_acc {point['acc']:.4f}  "
                      f"{point['s']:7.2f} s  (cpu {point['cpu_s']:.1f} s)", flush=True)
        codes = [proc.wait() for proc in procs]
    finally:  # interrupted: no recipe keeps running behind the next one's back
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if any(codes):
        raise SystemExit(f"{recipe}: a process failed (exit codes {codes})")
    if not points:
        raise SystemExit(f"{recipe}: no epoch was reported")
    return points


def write_quick_archive(path: Path, per_class: int = 4, test_per_class: int = 4) -> None:
    """A tiny archive in the python-version layout: 5 train batches and a test batch of
    images whose colour depends on their class, so every recipe learns something."""
    rng = np.random.default_rng(0)
    colours = rng.integers(40, 216, (10, 3))

    def batch(n_per_class: int) -> dict:
        labels = np.repeat(np.arange(10), n_per_class)
        pixels = colours[labels][:, :, None] + rng.normal(0, 40, (len(labels), 3, 1024))
        data = np.clip(pixels, 0, 255).astype(np.uint8).reshape(len(labels), 3072)
        return {b"data": data, b"labels": labels.tolist()}

    members = {f"data_batch_{i}": batch(per_class) for i in range(1, 6)}
    members["test_batch"] = batch(test_per_class)
    members["batches.meta"] = {b"label_names": [f"class{i}".encode() for i in range(10)]}
    with tarfile.open(path, "w:gz") as tar:
        for name, obj in members.items():
            raw = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))


def first_time_at(points: list[dict], acc: float) -> float:
    return next((p["s"] for p in points if p["acc"] >= acc), math.nan)


def plot(curves: dict[str, list[dict]], seed_acc: float | None, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for recipe, points in curves.items():
        ax.plot([p["s"] for p in points], [p["acc"] for p in points], marker="o",
                label=LABELS[recipe])
    if seed_acc is not None:
        ax.axhline(seed_acc, color="grey", linestyle=":", label=f"seed's final {seed_acc:.1%}")
    ax.set(xlabel="seconds (data preparation + training + evaluation)",
           ylabel="test accuracy", title="Time to accuracy, same data and cores")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def main() -> None:
    args = parse_args()
    if args.run:
        run_child(args)
        return
    # SIGTERM unwinds like Ctrl-C, so run_recipe stops the recipe's processes too.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    epochs = {"seed": args.seed_epochs, "resnet18": args.resnet18_epochs,
              "fast": args.fast_epochs}
    with tempfile.TemporaryDirectory() as tmp:
        if args.quick:
            args.data = str(Path(tmp) / "quick-cifar.tar.gz")
            write_quick_archive(Path(args.data))
            epochs = {"seed": 1, "resnet18": 1, "fast": 2}
        # The trainer reads its data from a store: `ingest` put it there once, before any
        # training, so that copy is not timed (the seed recipe reads the archive's file).
        store = LocalStore(str(Path(tmp) / "store"))
        store.ensure_buckets()
        store.put_file(cifar10_key(dataset_prefix("cifar10", None)), args.data)
        print(f"data={args.data} cpus={usable_cpus()} "
              f"trainer_processes={args.trainer_processes} epochs={epochs} "
              f"imports={IMPORT_SECONDS:.2f}s (not counted)", flush=True)
        curves = {recipe: run_recipe(recipe, args, str(Path(tmp) / "store"), epochs[recipe])
                  for recipe in args.only or RECIPES}
    seed_acc = curves["seed"][-1]["acc"] if "seed" in curves else None
    plot(curves, seed_acc, args.plot)
    print(f"plot: {args.plot}", flush=True)
    if set(curves) != set(RECIPES):
        return
    seed, fast, resnet = curves["seed"][-1], curves["fast"][-1], curves["resnet18"][-1]
    fast_to_seed = first_time_at(curves["fast"], seed["acc"])
    speedup = 0.0 if math.isnan(fast_to_seed) else seed["s"] / fast_to_seed
    print(f"seed_acc={seed['acc']:.4f} seed_s={seed['s']:.1f} "
          f"fast_s_to_seed_acc={fast_to_seed:.1f} speedup={speedup:.2f} "
          f"fast_final_acc={fast['acc']:.4f} fast_s={fast['s']:.1f} "
          f"resnet18_final_acc={resnet['acc']:.4f} resnet18_s={resnet['s']:.1f}")


if __name__ == "__main__":
    main()
