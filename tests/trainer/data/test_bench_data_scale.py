"""bench/data_scale.py runs (issue 28 item 25): its smaller scales hold every class, and the
whole bench ends with its machine-readable line."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from collections import Counter

import pytest

from tests.trainer.trainer_procs import REPO_ROOT, trainer_env
from trainer.data.ingest_folder import ingest_folder
from trainer.store import LocalStore

LAST_LINE = re.compile(r"rss_1x_mib=\d+ rss_16x_mib=\d+ rss_ratio=[\d.]+ "
                       r"stream_vs_memory_img_s=[\d.]+ over_memory_trained=true")


def data_scale():
    spec = importlib.util.spec_from_file_location("data_scale", REPO_ROOT / "bench" /
                                                  "data_scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_smaller_scale_holds_every_class_in_equal_parts_and_ingests(tmp_path):
    bench = data_scale()
    bench.make_tree(tmp_path / "all", 160)
    subset = bench.linked_subset(tmp_path / "all", tmp_path / "x1", 40)
    classes = Counter(path.parent.name for path in subset.rglob("*.png"))
    assert classes == {f"class{c}": 4 for c in range(bench.CLASSES)}, classes
    store = LocalStore(tmp_path / "store")
    store.ensure_buckets()
    ingest_folder(store, str(subset), "datasets/scale-1x", image_size=bench.SIZE)


@pytest.mark.slow
def test_the_bench_runs_at_its_quickest_and_ends_with_its_line():
    """Minutes: seven trainer launches of two ranks each."""
    # The bench's default limit, what a streaming run needs and 8 MiB (the trainer plans its
    # whole footprint and refuses less before it trains: the 2 MiB this ran with was), and
    # its default base, whose 16x set (24 MiB decoded) does not fit next to training, so it
    # streams (at base 50 or 200 it was held in memory: smaller than a stream holds).
    result = subprocess.run(
        [sys.executable, "bench/data_scale.py", "--epochs", "1"],
        cwd=REPO_ROOT, env=trainer_env(), capture_output=True, text=True, timeout=560,
        check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert LAST_LINE.fullmatch(result.stdout.strip().splitlines()[-1]), result.stdout[-2000:]
