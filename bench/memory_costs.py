"""The figures trainer/limits/footprint.py plans a run's memory with, measured and fitted.

Each point is a whole training run, ``python -m trainer train`` in a fresh process on
synthetic data held in memory (8 x batch_size training images, so evaluation runs whole
batches too; one epoch; checkpoint; publication with its export and monitoring reference),
and its figure is the peak resident memory the trainer reports at exit (its "memory"
event: VmHWM before the interpreter unloads its libraries) less the synthetic data it held
and less its runtime (what it held when it planned, before the data: imports).
With ``--world 2`` two processes train together (DDP, gloo) and the larger peak counts.

For each model the points are fitted as ``fixed + per_pixel x batch_size x image_size**2``:
``per_pixel`` is the least-squares slope over the points (each point the larger of its
precisions), ``fixed`` the intercept that puts the line on or above every point (so no
measured run needs more than the line). ``peers`` is the DDP run's peak less the single
process's at the same point; RUNTIME_BYTES the largest runtime seen. The last lines are the
figures as footprint.py holds them.

Usage: python bench/memory_costs.py [--models smallcnn fastcifar] [--points 16x16 32x64]
       [--precisions fp32 bf16] [--world 1] [--threads 1] [--tracking-uri URI]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from trainer.contract.config import MODELS

MIB = 1 << 20
log = logging.getLogger("memory_costs")
# SIZExBATCH points: from small to as large as two shared cores train in a few minutes,
# the stack's default run (resnet18 at 32 px, batch 128) among them.
DEFAULT_POINTS = {"resnet18": ["16x16", "32x32", "32x128", "64x32"],
                  "resnet18-imagenet": ["32x32", "64x32", "128x16", "128x64"],
                  "smallcnn": ["16x16", "32x64", "64x32", "128x16", "128x64"],
                  "fastcifar": ["16x16", "32x64", "64x32", "128x16", "128x64"]}

def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--points", nargs="+", help="SIZExBATCH (default: per model)")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"],
                        choices=("fp32", "bf16"))
    parser.add_argument("--world", type=int, default=1, help="processes training together")
    parser.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of each")
    parser.add_argument("--tracking-uri", help="an MLflow server rank 0 logs to")
    parser.add_argument("--peers-point", default="32x32",
                        help="SIZExBATCH measured again with 2 processes (none: 'off')")
    return parser.parse_args()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _memory_event(output: str) -> dict:
    for line in reversed(output.splitlines()):
        start = line.find(': {"event": "memory"')
        if start >= 0:
            return json.loads(line[start + 2:])
    raise RuntimeError(f"the trainer reported no peak:\n{output[-3000:]}")


RUNTIMES: list[int] = []  # what each process held when it planned


def measure(model: str, size: int, batch: int, precision: str, *, world: int, threads: int,
            tracking_uri: str | None) -> int:
    """The largest peak of the run's processes less the data they held and what each held
    when it planned (its runtime), in bytes."""
    with tempfile.TemporaryDirectory(prefix="memory-costs-") as root:
        config = {"dataset": "synthetic", "model": model, "image_size": size,
                  "batch_size": batch, "precision": precision, "epochs": 1,
                  "synthetic_size": 8 * batch, "log_every": 10**6}
        Path(root, "train.json").write_text(json.dumps(config))
        store = str(Path(root, "store"))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "WORLD_"))
               and k not in ("RANK", "LOCAL_WORLD_SIZE", "TRAINSTACK_MEMORY_LIMIT_BYTES")}
        env.update({"OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"})
        if tracking_uri:
            env.update({"MLFLOW_TRACKING_URI": tracking_uri,
                        "MLFLOW_EXPERIMENT_NAME": "memory-costs"})
        subprocess.run([sys.executable, "-m", "trainer", "buckets", "--store", store], env=env,
                       check=True, capture_output=True)
        port = _free_port()
        procs = []
        for rank in range(world):
            ranked = env if world == 1 else {**env, "MASTER_ADDR": "127.0.0.1",
                                             "MASTER_PORT": str(port), "WORLD_SIZE": str(world),
                                             "RANK": str(rank)}
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "trainer", "train", "--config", f"{root}/train.json",
                 "--store", store], env=ranked, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True))
        outputs = [proc.communicate()[0] for proc in procs]
        for proc, output in zip(procs, outputs):
            if proc.returncode:
                raise RuntimeError(f"{model} {size}x{batch}: exit {proc.returncode}\n"
                                   f"{output[-3000:]}")
        events = [_memory_event(output) for output in outputs]
        RUNTIMES.extend(e["runtime_bytes"] for e in events)
        return max(e["peak_rss_bytes"] - e["data_bytes"] - e["runtime_bytes"] for e in events)


def fit(points: list[tuple[int, int]]) -> tuple[int, float]:
    """``(fixed, per_pixel)`` for ``[(batch x pixels, bytes)]``: the least-squares slope, and
    the intercept that puts every point on or below the line."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    slope = 0.0 if spread == 0 else max(0.0, sum((x - mean_x) * (y - mean_y)
                                                  for x, y in points) / spread)
    return max(y - slope * x for x, y in points), slope


def model_figures(args, model: str) -> tuple[int, float, list[str]]:
    lines, points = [], []
    for point in args.points or DEFAULT_POINTS[model]:
        size, batch = (int(v) for v in point.split("x"))
        peaks = {precision: measure(model, size, batch, precision, world=args.world,
                                    threads=args.threads, tracking_uri=args.tracking_uri)
                 for precision in args.precisions}
        points.append((batch * size * size, max(peaks.values())))
        lines.append(f"{model:18s} {size:4d} px batch {batch:4d}: " + ", ".join(
            f"{p} {v / MIB:6.0f} MiB" for p, v in peaks.items()))
        log.info(lines[-1])
    fixed, slope = fit(points)
    worst = max(fixed + slope * x - y for x, y in points)
    lines.append(f"{model:18s} fit: fixed {fixed / MIB:.0f} MiB + {slope:.0f} B x batch x "
                 f"pixels; the line is at most {worst / MIB:.0f} MiB above a point")
    return fixed, slope, lines


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    report, table = [], {}
    for model in args.models:
        fixed, slope, lines = model_figures(args, model)
        report += lines
        peers = 0
        if args.peers_point != "off" and args.world == 1:
            size, batch = (int(v) for v in args.peers_point.split("x"))
            single, double = (measure(model, size, batch, "fp32", world=world,
                                      threads=args.threads, tracking_uri=None)
                              for world in (1, 2))
            peers = max(0, double - single)
            report.append(f"{model:18s} with a peer at {size} px batch {batch}: "
                          f"{single / MIB:.0f} -> {double / MIB:.0f} MiB")
        table[model] = (fixed, slope, peers)
    print("\n".join(report))
    print(f"runtime: {min(RUNTIMES) / MIB:.0f} to {max(RUNTIMES) / MIB:.0f} MiB when planning")
    print(f"RUNTIME_BYTES = {math.ceil(max(RUNTIMES) / MIB)} * MIB")
    for model, (fixed, slope, peers) in table.items():
        print(f'    "{model}": ModelCost(fixed={math.ceil(fixed / MIB)} * MIB, '
              f"per_pixel={math.ceil(slope)}.0, peers={math.ceil(peers / MIB)} * MIB),")


if __name__ == "__main__":
    main()
