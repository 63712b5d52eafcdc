"""Peak memory of a training process, phase by phase: load, build, train, evaluate,
checkpoint, export, with the trainer's own code on a full-size CIFAR-10-format dataset.

Each rank reports the process's peak resident set (VmHWM, what the kernel's high-water
mark says) and the peak of its anonymous memory (RssAnon, sampled every 5 ms: heap and
tensors, without the mapped torch libraries) after each phase. The last line is
machine-readable. Usage: python bench/train_memory.py [--model resnet18] [--batch-size 128]
[--precision fp32] [--steps 20] [--world 2] [--data cifar-10-python.tar.gz]
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import pickle
import re
import socket
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from trainer.contract.config import RunIdentity, TrainConfig
from trainer.contract.layout import ModelKeys, cifar10_key
from trainer.data.loading import load_dataset
from trainer.models.zoo import model_revision
from trainer.publish.publication import export_program
from trainer.run import distributed
from trainer.run.loop import EpochRunner
from trainer.run.train import build_training
from trainer.state import checkpoint
from trainer.state.checkpoint import TrainingState
from trainer.store import LocalStore

MIB = 1024 * 1024
log = logging.getLogger("train_memory")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--precision", default="fp32", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--steps", type=int, default=20, help="training steps measured")
    parser.add_argument("--world", type=int, default=2, help="local DDP processes (gloo)")
    parser.add_argument("--data", help="a CIFAR-10 python-version tar.gz (default: one of "
                                       "the same size with random pixels)")
    parser.add_argument("--batch-images", type=int, default=10_000,
                        help="images per batch of the random archive (CIFAR-10: 10,000)")
    return parser.parse_args()


def _status(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+) kB", text).group(1)) * 1024


class AnonPeak:
    """The highest RssAnon seen, sampled in a thread."""

    def __init__(self):
        self.peak, self.stop = _status("RssAnon"), threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, _status("RssAnon"))
            self.stop.wait(0.005)


def write_random_cifar(path: Path, per_batch: int = 10_000) -> None:
    """The python-version archive's layout and sizes (5 x 10,000 + 10,000), random pixels."""
    rng = np.random.default_rng(0)
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        def add(name: str, obj: dict) -> None:
            raw = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))

        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            add(name, {b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                       b"labels": [int(v) for v in rng.integers(0, 10, per_batch)]})
        add("batches.meta", {b"label_names": [f"c{i}".encode() for i in range(10)]})


def phases(args, store: LocalStore, env: distributed.DistEnv) -> dict[str, tuple[int, int]]:
    """``{phase: (VmHWM, peak RssAnon)}`` after each phase, in bytes."""
    anon, report, start = AnonPeak(), {}, time.monotonic()

    def mark(name: str) -> None:
        report[name] = (_status("VmHWM"), anon.peak)
        if env.is_main:  # progress: the whole run takes minutes on 2 cores
            log.info("rank 0: %s done at %.0f s", name, time.monotonic() - start)

    mark("start")
    cfg = TrainConfig(dataset="cifar10", model=args.model, batch_size=args.batch_size,
                      epochs=1, precision=args.precision, log_every=10**6)
    bundle = load_dataset("cifar10", store)
    mark("load")
    distributed.join(env)
    model, optimizer = build_training(cfg, env, bundle)
    train_model = DistributedDataParallel(model) if env.world_size > 1 else model
    runner = EpochRunner(cfg, env, train_model, optimizer, bundle)
    mark("build")
    runner.train_epoch(1, max_steps=args.steps)
    mark("train")
    _, confusion = runner.evaluate(model)
    mark("evaluate")
    if env.is_main:
        identity = RunIdentity(cfg, bundle.fingerprint, model_revision(cfg.model))
        state = TrainingState.fresh(identity)
        state.capture(model, optimizer, env.device)
        state.confusion = confusion
        checkpoint.save_checkpoint(store, ModelKeys(cfg.model_name).checkpoint(
            identity.run_id, 1), state)
        mark("checkpoint")
        export_program(model, tuple(bundle.test.images.shape[1:]))
        mark("export")
    anon.stop.set()
    return report


def _rank(rank: int, world: int, port: int, args, root: str, results) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                       "WORLD_SIZE": str(world), "RANK": str(rank), "LOCAL_RANK": str(rank),
                       "LOCAL_WORLD_SIZE": str(world)})
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    env = distributed.process_env()
    distributed.configure_cpu_threads(env)
    try:
        results.put((rank, phases(args, LocalStore(root), env)))
    finally:
        distributed.cleanup()


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    with tempfile.TemporaryDirectory(prefix="train-memory-") as root:
        store = LocalStore(root)
        store.ensure_buckets()
        archive = Path(args.data) if args.data else Path(root) / "cifar.tar.gz"
        if not args.data:
            log.info("writing a CIFAR-10-size archive of random pixels")
            write_random_cifar(archive, args.batch_images)
        log.info("%d processes, each: load the data, build the model, %d training steps, "
                 "evaluate; rank 0 then checkpoints and exports", args.world, args.steps)
        store.put_file(cifar10_key(), archive)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        ctx = mp.get_context("spawn")
        results = ctx.SimpleQueue()
        mp.spawn(_rank, args=(args.world, port, args, root, results), nprocs=args.world,
                 join=True)
        reports = dict(results.get() for _ in range(args.world))
    print(f"model={args.model} batch={args.batch_size} precision={args.precision} "
          f"steps={args.steps} world={args.world} threads/rank={max(1, os.cpu_count() // args.world)}")
    for rank in sorted(reports):
        for phase, (hwm, anon) in reports[rank].items():
            print(f"rank {rank} after {phase:10s} peak RSS {hwm / MIB:7.0f} MiB, "
                  f"peak anonymous {anon / MIB:7.0f} MiB")
    peak = max(hwm for report in reports.values() for hwm, _ in report.values())
    anon = max(a for report in reports.values() for _, a in report.values())
    print(f"peak_rss_mib={peak / MIB:.0f} peak_anon_mib={anon / MIB:.0f}")


if __name__ == "__main__":
    main()
