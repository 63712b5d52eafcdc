"""Issue 28 #16: a training process whose pod was given GPUs (TRAINSTACK_POD_GPUS, set by
the stack) stops at once with one line when torch sees none, instead of training on the
CPU with the GPUs paid for and idle; the line names the image variant a GPU pod needs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.testkit import WAIT_S
from trainer.contract.config import ConfigError
from trainer.contract.env import GPU_TORCH_VARIANT, POD_GPUS_ENV
from trainer.contract.errors import CONFIG_EXIT
from trainer.run import distributed
from trainer.store import LocalStore

REPO_ROOT = Path(__file__).resolve().parents[3]
needs_no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="this host has a GPU")


@pytest.fixture(autouse=True)
def one_process(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", POD_GPUS_ENV):
        monkeypatch.delenv(name, raising=False)


@needs_no_gpu
def test_a_pod_given_gpus_stops_before_anything_when_torch_sees_none(tmp_path):
    env = {**os.environ, POD_GPUS_ENV: "1", "PYTHONPATH": str(REPO_ROOT)}
    store = tmp_path / "store"
    LocalStore(store).ensure_buckets()
    done = subprocess.run(
        [sys.executable, "-m", "trainer", "train", "--dataset", "digits", "--model", "smallcnn",
         "--epochs", "1", "--store", str(store)],
        check=False, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=WAIT_S)
    assert done.returncode == CONFIG_EXIT, done.stderr[-2000:]  # no restart would help
    (line,) = [entry for entry in done.stderr.splitlines() if "ERROR" in entry]
    assert f"{POD_GPUS_ENV}=1" in line and "sees 0" in line
    assert "Traceback" not in done.stderr and '"event": "start"' not in done.stderr
    assert not [p for p in store.rglob("*") if p.is_file()]  # nothing trained or written


@needs_no_gpu
def test_a_cpu_build_of_torch_is_named_with_the_variant_to_build(monkeypatch):
    monkeypatch.setenv(POD_GPUS_ENV, "2")
    monkeypatch.setattr(torch.version, "cuda", None)  # what the CPU wheel reports
    with pytest.raises(ConfigError) as raised:
        distributed.process_env()
    message = str(raised.value)
    assert "\n" not in message and "CPU build" in message
    assert f"TORCH_VARIANT={GPU_TORCH_VARIANT}" in message and raised.value.key == POD_GPUS_ENV


@pytest.mark.parametrize("value", [None, "0"])
def test_a_pod_without_gpus_trains_where_torch_says(monkeypatch, value):
    if value is not None:
        monkeypatch.setenv(POD_GPUS_ENV, value)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert distributed.process_env().device.type == expected
