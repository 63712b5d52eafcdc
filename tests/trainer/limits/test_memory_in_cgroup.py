"""The trainer in a real memory cgroup (issue 32): given a limit its streaming run fits but
its dataset held in memory would not, it streams, trains and publishes without being
OOM-killed, its peak within its plan; given less than it needs, it stops at once with the
one line that names the memory it needs and memoryPerWorker (exit 78, a configuration
error), instead of an OOM kill.

The limit is the cgroup's own (no TRAINSTACK_MEMORY_LIMIT_BYTES): the trainer reads it from
/proc/self/cgroup. 128 px images and tiny shards keep the run short; the limits are set
from the trainer's own figures (trainer.limits.footprint) around what this dataset needs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.trainer.image_trees import image_tree
from tests.trainer.limits.cgroups import CgroupUnavailable, memory_cgroup
from tests.trainer.trainer_procs import REPO_ROOT, events, trainer_env
from trainer.contract.errors import CONFIG_EXIT
from trainer.data.ingest import ingest
from trainer.data.streaming.source import open_sharded
from trainer.limits.footprint import MIB, Footprint
from trainer.limits.memlimit import MEMORY_LIMIT_ENV
from trainer.store import LocalStore

pytestmark = pytest.mark.slow

PREFIX = "datasets/imagefolder"
SIZE, BATCH, MODEL = 128, 16, "smallcnn"
CONFIG = {"dataset": "imagefolder", "model": MODEL, "image_size": SIZE, "batch_size": BATCH,
          "epochs": 1, "log_every": 5}
# Shards of at most 1 MiB of pixels (21 images of 128 px): streaming holds little, so a
# dataset of 20 MiB no longer fits next to training once the limit is set just above what
# streaming needs.
SHARD_BYTES = 1 * MIB
# A test split larger than the training one (train/ and test/ folders): evaluation, and the
# monitoring reference at publication, go through more images than a batch.
CLASSES, TRAIN_PER_CLASS, TEST_PER_CLASS = ("bird", "cat", "dog"), 35, 100
HEADROOM = 8 * MIB
PAGE = 4096  # the kernel keeps a limit in whole pages


@pytest.fixture(scope="module")
def run() -> Footprint:
    """The run's footprint as the trainer will plan it: with what a trainer process holds
    once it has imported everything (its runtime), read from one, not assumed."""
    code = ("import trainer.run.train; from trainer.limits.memlimit import peak_rss_bytes; "
            "print(peak_rss_bytes())")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=trainer_env(),
                            capture_output=True, text=True, timeout=300, check=True)
    return Footprint(MODEL, SIZE, BATCH, runtime=int(result.stdout))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, int, int]:
    """The store, and what this dataset needs decoded in memory and streamed."""
    root = tmp_path_factory.mktemp("cgroup-run")
    store = LocalStore(root / "store")
    store.ensure_buckets()
    tree = root / "tree"
    for split, per_class, seed in (("train", TRAIN_PER_CLASS, 0), ("test", TEST_PER_CLASS, 1)):
        image_tree(tree / split, classes=CLASSES, per_class=per_class, seed=seed, size=SIZE)
    ingest(store, "imagefolder", str(tree), image_size=SIZE, shard_bytes=SHARD_BYTES)
    sharded = open_sharded(store, PREFIX, SIZE)
    return root, sharded.index.decoded_bytes(), sharded.streaming_bytes()


def train_in_cgroup(root: Path, limit: int, name: str) -> tuple[subprocess.CompletedProcess,
                                                                 Path]:
    """``python -m trainer train`` joined to a new memory cgroup of ``limit`` bytes."""
    config = root / f"{name}.json"
    config.write_text(json.dumps(CONFIG))
    env = trainer_env({"TRAINSTACK_DATA_CACHE_DIR": str(root / f"cache-{name}")})
    env.pop(MEMORY_LIMIT_ENV, None)
    try:
        with memory_cgroup(limit) as procs:
            result = subprocess.run(
                ["sh", "-c", 'echo $$ > "$0" && exec "$@"', str(procs), sys.executable, "-m",
                 "trainer", "train", "--config", str(config), "--store", str(root / "store")],
                cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900,
                check=False)
    except CgroupUnavailable as e:
        pytest.skip(str(e))
    return result, root / "store"


def test_a_dataset_that_does_not_fit_next_to_training_streams_and_publishes_in_the_limit(
        run, dataset):
    root, decoded, streamed = dataset
    limit = (run.need(streamed) + HEADROOM) // PAGE * PAGE
    assert run.need(decoded) > limit + HEADROOM, "the dataset must not fit in memory"
    result, store = train_in_cgroup(root, limit, "fits")
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"exit {result.returncode} (-9: OOM-killed)\n{output[-4000:]}"
    assert events(output, "data")[0]["loading"] == "stream"
    assert events(output, "done"), output[-3000:]
    assert LocalStore(store).list("models/smallcnn-imagefolder/versions/")
    peak = events(output, "memory")[-1]
    assert peak["available_bytes"] == limit  # the cgroup's own limit, read by the trainer
    assert peak["peak_rss_bytes"] <= peak["planned_bytes"] <= limit, peak
    print(json.dumps({"limit": limit, "decoded": decoded, **peak}))


def test_less_memory_than_the_run_needs_stops_at_once_with_one_line(run, dataset):
    root, _, streamed = dataset
    need = run.need(streamed)
    result, _ = train_in_cgroup(root, need * 3 // 4 // PAGE * PAGE, "short")
    output = result.stdout + result.stderr
    # A configuration error's exit (EX_CONFIG): a TrainJob fails at once, no restart loop.
    assert result.returncode == CONFIG_EXIT, \
        f"exit {result.returncode} (-9: OOM-killed)\n{output[-4000:]}"
    errors = [line for line in output.splitlines() if " ERROR " in line]
    assert len(errors) == 1, output[-3000:]
    # What the trainer read of its own runtime may differ by a page or two from the fixture's.
    assert f"model {MODEL} at {SIZE} px, batch_size {BATCH} needs about " in errors[0]
    said = int(errors[0].split("needs about ")[1].split(" MiB")[0].replace(",", ""))
    assert abs(said - need / MIB) <= HEADROOM / MIB, (said, need / MIB)
    assert "raise memoryPerWorker to at least" in errors[0]
    assert not events(output, "progress") and not events(output, "epoch")
