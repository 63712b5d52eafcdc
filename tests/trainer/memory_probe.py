"""Peak memory of one step of the trainer, measured in a fresh process.

``python -m tests.trainer.memory_probe SCENARIO WORKDIR`` prepares the scenario's input,
then resets the kernel's resident-set high-water mark (``/proc/self/clear_refs``) and runs
only the step under test. The last stdout line is JSON: ``peak_growth`` (bytes the peak RSS
rose above the RSS before the step), ``payload`` (the bytes the step must hold: the
decoded images) and ``error`` (the message of a DatasetError, if one was raised).
"""

from __future__ import annotations

import gc
import io
import json
import pickle
import re
import subprocess
import sys
from pathlib import Path

from tests.trainer.trainer_procs import REPO_ROOT, trainer_env


def _status(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+) kB", text).group(1)) * 1024


def _measure(step) -> tuple[int, str | None]:
    from trainer.contract.errors import DatasetError

    gc.collect()
    before = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    error = None
    try:
        result = step()
    except DatasetError as e:
        result, error = None, str(e)
    peak = _status("VmHWM")
    del result
    return peak - before, error


def imagefolder(workdir: Path):
    from PIL import Image

    from trainer.data.loading import load_dataset
    from trainer.store import LocalStore

    store = LocalStore(workdir / "store")
    store.ensure_buckets()
    count, size = 2000, 64
    for i in range(count):
        buf = io.BytesIO()
        Image.new("RGB", (16, 16), (i % 256, 7, 200)).save(buf, format="PNG")
        store.put_bytes(f"datasets/imagefolder/c{i % 4}/{i}.png", buf.getvalue())
    step = lambda: load_dataset("imagefolder", store, image_size=size)
    return step, count * 3 * size * size


def cifar(workdir: Path):
    from tests.trainer.cifar_fixtures import archive_bytes, make_batches
    from trainer.contract.layout import cifar10_key
    from trainer.data.loading import load_dataset
    from trainer.store import LocalStore

    store = LocalStore(workdir / "store")
    store.ensure_buckets()
    store.put_bytes(cifar10_key(), archive_bytes(make_batches(per_class=200)))
    return lambda: load_dataset("cifar10", store), 12_000 * 3072


def label_bomb(workdir: Path):
    """A CIFAR batch of 2 images whose 'labels' is a few hundred bytes of shared lists."""
    import numpy as np

    from tests.trainer.cifar_fixtures import archive_bytes, make_batches
    from trainer.data import cifar

    labels: list = [1]
    for _ in range(24):  # each level doubles the leaves: 2**24 once flattened
        labels = [labels, labels]
    bomb = pickle.dumps({b"labels": labels, b"data": np.zeros((2, 3072), np.uint8)}, protocol=2)
    raw = archive_bytes(make_batches(per_class=1), override={"data_batch_1": bomb})
    step = lambda: cifar.read_archive(io.BytesIO(raw), "bomb.tar.gz")
    return step, 60 * 3072


def augment(workdir: Path):
    import torch

    from trainer.data.augment import BatchAugmenter

    images = torch.randint(0, 256, (20_000, 3, 32, 32), dtype=torch.uint8)

    def step():
        augmenter = BatchAugmenter(images, "crop+flip", (0.5,) * 3, (0.25,) * 3)
        return augmenter(torch.arange(128), torch.Generator().manual_seed(0))

    return step, 128 * 3 * 32 * 32 * 4


def stream_shards(workdir: Path):
    """An epoch streamed from two training shards of 48 MiB: the step crosses a shard."""
    import torch

    from tests.trainer.image_trees import image_tree
    from trainer.data.ingest import ingest
    from trainer.data.loading import load_dataset
    from trainer.data.streaming.batches import StreamBatches
    from trainer.data.streaming.plan import EpochPlan
    from trainer.store import LocalStore

    size, per_shard = 128, 1024
    store = LocalStore(workdir / "store")
    store.ensure_buckets()
    tree = workdir / "tree"
    image_tree(tree / "train", classes=("cat", "dog"), per_class=per_shard, size=size)
    image_tree(tree / "test", classes=("cat", "dog"), per_class=4, size=size)
    ingest(store, "imagefolder", str(tree), image_size=size,
           shard_bytes=per_shard * 3 * size * size)
    batches = StreamBatches(load_dataset("imagefolder", store, image_size=size,
                                         loading="stream").sharded, torch.device("cpu"))
    plan = EpochPlan.fresh(batches.shard_sizes, seed=0, epoch=1, world=1, batch_size=64)
    step = lambda: sum(len(batch[2]) for batch in batches.train(plan, 0, 0, seed=0))
    return step, per_shard * 3 * size * size


SCENARIOS = {"imagefolder": imagefolder, "cifar": cifar, "label_bomb": label_bomb,
             "augment": augment, "stream_shards": stream_shards}


def probe(scenario: str, workdir: Path) -> dict:
    """Run ``scenario`` in a fresh interpreter; its JSON report."""
    result = subprocess.run([sys.executable, "-m", "tests.trainer.memory_probe", scenario,
                             str(workdir)], cwd=REPO_ROOT, env=trainer_env(),
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    scenario, workdir = sys.argv[1], Path(sys.argv[2])
    workdir.mkdir(parents=True, exist_ok=True)
    step, payload = SCENARIOS[scenario](workdir)
    growth, error = _measure(step)
    print(json.dumps({"scenario": scenario, "peak_growth": growth, "payload": payload,
                      "error": error}))


if __name__ == "__main__":
    main()
