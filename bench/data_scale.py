"""Training memory and speed as a dataset grows past the memory the trainer is given.

One run, on the same cores: a synthetic imagefolder of CIFAR-size (32 px) PNGs at 1x, 4x and
16x ``--base`` images is ingested (files, then shards) into a local store, and trained by
``python -m trainer train`` with ``--world`` ranks, the way the pods run it. The trainer is
given ``--memory-mib`` as its memory limit (TRAINSTACK_MEMORY_LIMIT_BYTES, which it obeys as
its cgroup's: the data choice in trainer.data.loading; default: what a streaming run needs by
trainer.limits.footprint, and 8 MiB), in which the 16x dataset does not fit next to training. Per size: peak RSS per rank (the kernel's high-water mark, from wait4), img/s of the
best epoch, seconds from launch to the first training step; at 1x the in-memory path too.
Then the 16x dataset trains again, is killed at its first mid-epoch checkpoint, resumes
with one rank fewer and publishes.

The last line: ``rss_1x_mib=... rss_16x_mib=... rss_ratio=... stream_vs_memory_img_s=...
over_memory_trained=true|false``. Usage: python bench/data_scale.py [--base 500]
[--world 2] [--memory-mib N] [--epochs 4]
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image

from trainer.data.ingest_folder import ingest_folder
from trainer.data.streaming.source import open_sharded
from trainer.limits.footprint import STREAM_SAMPLE_IMAGES, Footprint, streamed_bytes
from trainer.store import LocalStore

log = logging.getLogger("data_scale")
MIB = 1024 * 1024
CLASSES = 10
SIZE = 32
SCALES = (1, 4, 16)
SHARD_MIB = 4
BATCH = 64
# Every training run gets its own seed, so its own run_id: none finds another's published.
SEEDS = itertools.count(1)


def make_tree(root: Path, count: int, seed: int = 0) -> None:
    """``count`` noisy PNGs, one colour per class (learnable, and PNGs of CIFAR's size)."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(40, 216, (CLASSES, 3))
    for i in range(count):
        cls = i % CLASSES
        folder = root / f"class{cls}"
        folder.mkdir(parents=True, exist_ok=True)
        noise = rng.integers(-40, 41, (SIZE, SIZE, 3))
        pixels = np.clip(colours[cls] + noise, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:06d}.png", compress_level=1)


def linked_subset(source: Path, root: Path, count: int) -> Path:
    """The first ``count`` images make_tree made (hard links: no copies): every class in
    turn, as it made them. Not the first in path order: those are all of class0, which the
    ingest refuses (one class)."""
    for path in sorted(source.rglob("*.png"), key=lambda p: p.name)[:count]:
        target = root / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(path, target)
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(store: Path, config: dict, world: int, env: dict, workdir: Path):
    """``world`` trainer processes (rank 0's output piped, the others' to files); returns
    them and the launch time."""
    config_file = workdir / f"train-{next(SEEDS)}.json"
    config_file.write_text(json.dumps(config))
    port, started, procs = free_port(), time.time(), []
    for rank in range(world):
        rank_env = {**os.environ, **env, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                    "WORLD_SIZE": str(world), "RANK": str(rank), "OMP_NUM_THREADS": "1",
                    "PYTHONUNBUFFERED": "1"}
        out = subprocess.PIPE if rank == 0 else (workdir / f"{config_file.stem}-{rank}.log").open("w")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "trainer", "train", "--config", str(config_file), "--store",
             str(store)], env=rank_env, stdout=out, stderr=subprocess.STDOUT, text=True))
    return procs, started


def finish(procs) -> tuple[str, list[float]]:
    """Rank 0's log and every rank's peak RSS in MiB (the kernel's high-water mark, from
    wait4), once all exited; a failed rank is raised."""
    output, peaks = procs[0].stdout.read(), []
    for proc in procs:
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        peaks.append(usage.ru_maxrss / 1024)
    if any(proc.returncode for proc in procs):
        raise RuntimeError(f"trainer failed: {output[-3000:]}")
    return output, peaks


def events(output: str, kind: str) -> list[tuple[float, dict]]:
    """(unix time, event) of rank 0's JSON log lines of ``kind``."""
    found = []
    for line in output.splitlines():
        at = line.find(': {"event"')
        if at >= 0 and f'"event": "{kind}"' in line:
            stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            found.append((stamp, json.loads(line[at + 2:])))
    return found


def train(store: Path, prefix: str, loading: str, epochs: int, args, env: dict,
          workdir: Path) -> dict:
    config = {"dataset": "imagefolder", "data_prefix": prefix, "model": "fastcifar",
              "epochs": epochs, "batch_size": BATCH, "lr": 0.2, "image_size": SIZE,
              "log_every": 1, "data_loading": loading, "seed": next(SEEDS)}
    procs, started = launch(store, config, args.world, env, workdir)
    output, peaks = finish(procs)
    first_step = events(output, "progress")[0][0]
    chosen = events(output, "data")[0][1]["loading"] if events(output, "data") else "memory"
    return {"loading": chosen, "rss_mib": max(peaks), "rss_per_rank_mib": peaks,
            "img_s": max(e["img_per_s"] for _, e in events(output, "epoch")),
            "first_step_s": first_step - started}


def killed_and_resumed(store: Path, prefix: str, train_images: int, args, env: dict,
                       workdir: Path) -> bool:
    """Train ``prefix`` streaming, kill every rank at the first mid-epoch checkpoint (a
    quarter into the epoch), resume with one rank fewer (at least one); True once that run
    published after resuming mid-epoch."""
    every = max(1, train_images // (BATCH * args.world) // 4)
    config = {"dataset": "imagefolder", "data_prefix": prefix, "model": "fastcifar",
              "epochs": 1, "batch_size": BATCH, "lr": 0.2, "image_size": SIZE,
              "checkpoint_every_steps": every, "seed": next(SEEDS)}
    procs, _ = launch(store, config, args.world, env, workdir)
    killed = False
    for line in procs[0].stdout:
        if "checkpoint written" in line and "+" in line.rsplit("/", 1)[-1]:
            killed = True
            break
    for proc in procs:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    log.info("killed at a mid-epoch checkpoint: %s", killed)
    procs, _ = launch(store, config, max(1, args.world - 1), env, workdir)
    output, _ = finish(procs)
    resumed = events(output, "resume")
    ok = bool(killed and resumed and resumed[0][1].get("samples_trained") and events(output, "done"))
    log.info("killed mid-epoch, resumed: %s", resumed[0][1] if resumed else None)
    return ok


def streaming_limit(world: int) -> int:
    """A limit a run streams in and no dataset here fits in next to training: what a
    streaming run needs (trainer.limits.footprint, the measured runtime) and 8 MiB."""
    image = 3 * SIZE ** 2
    data = streamed_bytes(image, SHARD_MIB * MIB // image, 2 * STREAM_SAMPLE_IMAGES)
    return Footprint("fastcifar", SIZE, BATCH, peers=world > 1).need(data) + 8 * MIB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=int, default=500, help="images at 1x")
    parser.add_argument("--world", type=int, default=2)
    parser.add_argument("--memory-mib", type=int,
                        help="the memory limit the trainer is given (default: a streaming "
                             "run's need and 8 MiB)")
    parser.add_argument("--epochs", type=int, default=4,
                        help="epochs of the 1x runs (their best epoch counts)")
    args = parser.parse_args()
    if args.memory_mib is None:
        args.memory_mib = -(-streaming_limit(args.world) // MIB)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory(prefix="data-scale-") as tmp:
        run(args, Path(tmp))


def run(args, tmp: Path) -> None:
    store_dir = tmp / "store"
    store = LocalStore(store_dir)
    store.ensure_buckets()
    make_tree(tmp / "all", args.base * SCALES[-1])
    env = {"TRAINSTACK_MEMORY_LIMIT_BYTES": str(args.memory_mib * MIB),
           "TRAINSTACK_DATA_CACHE_DIR": str(tmp / "cache"),
           "TRAINSTACK_DATA_CACHE_BYTES": str(4 * SHARD_MIB * MIB)}
    results, decoded = {}, {}
    for scale in SCALES:
        source = tmp / "all" if scale == SCALES[-1] else linked_subset(
            tmp / "all", tmp / f"x{scale}", args.base * scale)
        prefix = f"datasets/scale-{scale}x"
        ingest_folder(store, str(source), prefix, image_size=SIZE, shard_bytes=SHARD_MIB * MIB)
        index = open_sharded(store, prefix, SIZE).index
        decoded[scale], train_images = index.decoded_bytes(), index.count("train")
        if scale == 1:  # CIFAR-size images both ways, epochs long enough to warm up
            results["memory"] = train(store_dir, prefix, "memory", args.epochs, args, env, tmp)
            results[1] = train(store_dir, prefix, "stream", args.epochs, args, env, tmp)
        else:
            results[scale] = train(store_dir, prefix, "auto", 1, args, env, tmp)
        log.info("%dx: %d images, %.1f MiB decoded (limit %d MiB): %s", scale,
                 args.base * scale, decoded[scale] / MIB, args.memory_mib,
                 json.dumps(results[scale]))
    log.info("1x in memory: %s", json.dumps(results["memory"]))
    over = results[SCALES[-1]]["loading"] == "stream" and killed_and_resumed(
        store_dir, f"datasets/scale-{SCALES[-1]}x", train_images, args, env, tmp)
    rss_1x, rss_16x = results[1]["rss_mib"], results[SCALES[-1]]["rss_mib"]
    print(f"rss_1x_mib={rss_1x:.0f} rss_16x_mib={rss_16x:.0f} rss_ratio={rss_16x / rss_1x:.3f} "
          f"stream_vs_memory_img_s={results[1]['img_s'] / results['memory']['img_s']:.3f} "
          f"over_memory_trained={'true' if over else 'false'}")


if __name__ == "__main__":
    main()
