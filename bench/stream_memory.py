"""Peak memory of streaming training runs against the limit each is given (issue 32).

For each image size (default 32, 64 and 128 px) an imagefolder of ``--images`` photos-like
images is ingested as shards at that size; then, for each batch size (default: the
trainer's 128 and a small 16), ``python -m trainer train`` streams it (data_loading:
stream, one epoch, then publication) in a fresh process given ``--limit-mib`` as its
memory limit (TRAINSTACK_MEMORY_LIMIT_BYTES, which the trainer obeys like its cgroup's).
Each row is the run's plan (what trainer.limits.footprint says it needs), and either its
peak resident memory (VmHWM, reported by the trainer at exit) against the limit, or the
one line it stopped with before training because the plan does not fit.

Usage: python bench/stream_memory.py [--model smallcnn] [--limit-mib 1500] [--images 600]
       [--sizes 32 64 128] [--batches 128 16] [--shard-mib 8]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from trainer.contract.config import MODELS
from trainer.contract.errors import CONFIG_EXIT

MIB = 1 << 20
log = logging.getLogger("stream_memory")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smallcnn", choices=MODELS)
    parser.add_argument("--limit-mib", type=int, default=1500)
    parser.add_argument("--images", type=int, default=600, help="images per dataset")
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--batches", type=int, nargs="+", default=[128, 16])
    parser.add_argument("--shard-mib", type=int, default=8, help="the ingest's --shard-mib")
    return parser.parse_args()


def write_photos(root: Path, count: int, size: int) -> None:
    """JPEGs of ``size`` px in 4 class folders: smooth colour fields with noise."""
    rng = np.random.default_rng(0)
    grid = np.linspace(0, 1, size)[None, :, None]
    for index in range(count):
        folder = root / f"class{index % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        colours = rng.integers(0, 256, (2, 3))
        field = colours[0] * grid + colours[1] * grid.transpose(1, 0, 2)
        noise = rng.normal(0, 12, (size, size, 3))
        pixels = np.clip(field / 2 + noise + 40 * (index % 4), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{index}.jpg", quality=90)


def trainer(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainer", *args], env=env,
                          capture_output=True, text=True, check=False)


def events(output: str, kind: str) -> list[dict]:
    found = []
    for line in output.splitlines():
        start = line.find(': {"event": "')
        if start >= 0 and line[start + 2:].startswith(f'{{"event": "{kind}"'):
            found.append(json.loads(line[start + 2:]))
    return found


def run(args, store: str, root: Path, size: int, batch: int, env: dict[str, str]) -> str:
    """One streaming run given the limit; its row."""
    config = root / f"train-{size}-{batch}.json"
    config.write_text(json.dumps({"dataset": "imagefolder", "model": args.model,
                                  "image_size": size, "batch_size": batch, "epochs": 1,
                                  "data_loading": "stream", "log_every": 10**6}))
    limit = args.limit_mib * MIB
    start = time.monotonic()
    result = trainer(["train", "--config", str(config), "--store", store],
                     {**env, "TRAINSTACK_MEMORY_LIMIT_BYTES": str(limit)})
    output, seconds = result.stdout + result.stderr, time.monotonic() - start
    head = f"{size:4d} px  batch {batch:4d}  limit {limit / MIB:6.0f} MiB"
    if result.returncode == 0:
        memory = events(output, "memory")[-1]
        peak, planned = memory["peak_rss_bytes"], memory["planned_bytes"]
        verdict = "below the limit" if peak <= limit else "ABOVE THE LIMIT"
        return (f"{head}  planned {planned / MIB:6.0f} MiB  peak RSS {peak / MIB:6.0f} MiB  "
                f"{verdict} ({peak / limit:.0%} of it; trained and published in {seconds:.0f} s)")
    errors = [line.split(" trainer: ", 1)[-1] for line in output.splitlines()
              if " ERROR " in line]
    if result.returncode == CONFIG_EXIT and errors and not events(output, "progress"):
        return f"{head}  refused before training in {seconds:.0f} s: {errors[-1]}"
    return f"{head}  FAILED: exit {result.returncode}\n{output[-2000:]}"


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update({"PYTHONUNBUFFERED": "1"})
    rows = []
    with tempfile.TemporaryDirectory(prefix="stream-memory-") as tmp:
        root = Path(tmp)
        env["TRAINSTACK_DATA_CACHE_DIR"] = str(root / "cache")
        for size in args.sizes:
            store = str(root / f"store-{size}")
            write_photos(root / f"photos-{size}", args.images, size)
            trainer(["buckets", "--store", store], env).check_returncode()
            trainer(["ingest", "--dataset", "imagefolder", "--source",
                     str(root / f"photos-{size}"), "--store", store, "--image-size",
                     str(size), "--shard-mib", str(args.shard_mib)], env).check_returncode()
            for batch in args.batches:
                rows.append(run(args, store, root, size, batch, env))
                log.info(rows[-1])
    print(f"model {args.model}, {args.images} images per dataset, streamed from shards of "
          f"at most {args.shard_mib} MiB, one process, "
          f"{os.environ.get('OMP_NUM_THREADS', 'all usable')} threads")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
