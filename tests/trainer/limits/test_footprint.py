"""The memory a training run needs (trainer.limits.footprint): the measured figures' shape,
the one line a run that does not fit stops with, and the contracts it shares with the
ingest, the streaming source and the stack."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.trainer.trainer_procs import REPO_ROOT
from trainer.cli import build_parser
from trainer.contract.config import MODELS
from trainer.data.streaming import ingest, source
from trainer.limits.footprint import (
    DEFAULT_SHARD_BYTES,
    MARGIN,
    MARGIN_BYTES,
    MIB,
    MODEL_COSTS,
    RUNTIME_BYTES,
    TRACKING_BYTES,
    Footprint,
    evaluation_batch_size,
    quantity,
    shortfall,
    stack_data_bytes,
)


def test_every_model_has_measured_figures():
    assert set(MODEL_COSTS) == set(MODELS)
    for cost in MODEL_COSTS.values():
        assert cost.fixed > 0 and cost.per_pixel > 0 and cost.peers >= 0


def test_a_run_needs_its_runtime_fixed_cost_activations_and_data_with_the_margin():
    run = Footprint("smallcnn", 64, 32, runtime=600 * MIB)
    cost = MODEL_COSTS["smallcnn"]
    assert run.training_bytes() == pytest.approx(
        600 * MIB + cost.fixed + cost.per_pixel * 32 * 64 ** 2, abs=1)
    assert run.need(10 * MIB) == pytest.approx(
        (run.training_bytes() + 10 * MIB) * (1 + MARGIN) + MARGIN_BYTES, abs=2)
    # The stack, which has no process to read, takes the measured runtime.
    assert Footprint("smallcnn", 64, 32).runtime == RUNTIME_BYTES
    # Activations scale with the batch and the pixels; a GPU keeps them.
    activations = run.training_bytes() - 600 * MIB - cost.fixed
    assert Footprint("smallcnn", 128, 32, runtime=600 * MIB).training_bytes() == \
        pytest.approx(600 * MIB + cost.fixed + 4 * activations, abs=4)
    assert Footprint("smallcnn", 64, 32, runtime=600 * MIB,
                     accelerator=True).training_bytes() == 600 * MIB + cost.fixed
    with_peers = Footprint("smallcnn", 64, 32, runtime=600 * MIB, peers=True,
                           tracking=True).training_bytes()
    assert with_peers == run.training_bytes() + cost.peers + TRACKING_BYTES


def test_the_line_names_the_run_what_it_needs_what_it_has_and_the_key_to_raise():
    run = Footprint("resnet18", 128, 128)
    need = run.need(0)
    line = shortfall(run, need, 2 * 2**30, "its data: 5 MiB", processes=2)
    assert "\n" not in line
    assert line.startswith(f"model resnet18 at 128 px, batch_size 128 needs about "
                           f"{-(-need // MIB):,} MiB of memory per training process")
    assert "may use 2,048 MiB (the pod's limit over its 2 processes)" in line
    assert f"raise memoryPerWorker to at least {quantity(2 * need)}" in line


def test_a_quantity_is_rounded_up_to_64_mib():
    assert quantity(1) == "64Mi" and quantity(64 * MIB) == "64Mi"
    assert quantity(64 * MIB + 1) == "128Mi"


def test_evaluation_runs_at_the_training_batch_which_the_figures_were_measured_with():
    assert evaluation_batch_size(48) == 48


def test_the_figures_share_the_ingest_and_streaming_constants():
    assert ingest.DEFAULT_SHARD_BYTES == DEFAULT_SHARD_BYTES
    assert build_parser().parse_args(["ingest"]).shard_mib * MIB == DEFAULT_SHARD_BYTES
    assert source.SAMPLE_IMAGES == 1024
    size, holding = stack_data_bytes("imagefolder")
    # A default shard of 32 px images, and 2 x 1024 samples, with their labels.
    assert size == (DEFAULT_SHARD_BYTES // 3072 + 2048) * (3072 + 8)
    assert "streamed" in holding
    assert stack_data_bytes("cifar10")[0] == 60_000 * 3072


def test_the_figures_import_nothing_heavy(tmp_path):
    """The Pulumi program imports them: no torch, numpy or PIL."""
    code = ("import json, sys; import trainer.limits.footprint; print(json.dumps(sorted("
            "m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy', 'PIL'))))")
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
