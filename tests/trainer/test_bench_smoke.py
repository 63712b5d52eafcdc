"""The throughput benchmark runs end to end and ends with its machine-readable line."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.trainer.trainer_procs import REPO_ROOT, trainer_env

pytestmark = pytest.mark.slow

LAST_LINE = re.compile(
    r"compute_img_s=[\d.]+ trainer_img_s=[\d.]+ baseline_img_s=[\d.]+ "
    r"trainer_vs_compute=[\d.]+ trainer_vs_baseline=[\d.]+ ddp2_vs_1=[\d.]+")


def test_bench_prints_every_figure_and_the_summary_line_last():
    env = trainer_env()
    env.pop("OMP_NUM_THREADS")
    result = subprocess.run(
        [sys.executable, "bench/train_throughput.py", "--model", "smallcnn", "--batch-size", "16",
         "--steps", "2", "--warmup", "1", "--rounds", "1", "--workers", "0"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert LAST_LINE.fullmatch(lines[-1]), lines[-1]
    for figure in ("(1) compute", "(2) trainer", "(3) baseline", "2 DDP processes"):
        assert any(figure in line for line in lines), figure


MEMORY_LINE = re.compile(r"peak_rss_mib=\d+ peak_anon_mib=\d+")


def test_memory_bench_reports_every_phase_of_every_rank_and_the_summary_line_last():
    result = subprocess.run(
        [sys.executable, "bench/train_memory.py", "--model", "smallcnn", "--batch-size", "16",
         "--steps", "2", "--world", "2", "--batch-images", "40"],
        cwd=REPO_ROOT, env=trainer_env(), capture_output=True, text=True, timeout=300,
        check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert MEMORY_LINE.fullmatch(lines[-1]), lines[-1]
    for rank, phase in [(0, "export"), (0, "checkpoint"), (1, "evaluate")]:
        assert any(line.startswith(f"rank {rank} after {phase}") for line in lines), lines
    # Issue 24: progress while it runs (minutes on 2 cores), on stderr.
    for phase in ("load", "train", "export"):
        assert f"rank 0: {phase} done at" in result.stderr, result.stderr[-2000:]


TTA_LINE = re.compile(
    r"seed_acc=[\d.]+ seed_s=[\d.]+ fast_s_to_seed_acc=(?:[\d.]+|nan) speedup=[\d.]+ "
    r"fast_final_acc=[\d.]+ fast_s=[\d.]+ resnet18_final_acc=[\d.]+ resnet18_s=[\d.]+")


def test_time_to_accuracy_bench_runs_all_three_recipes_plots_and_ends_with_its_line(tmp_path):
    plot = tmp_path / "tta.png"
    result = subprocess.run(
        [sys.executable, "bench/time_to_accuracy.py", "--quick", "--plot", str(plot)],
        cwd=REPO_ROOT, env=trainer_env(), capture_output=True, text=True, timeout=300,
        check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert TTA_LINE.fullmatch(lines[-1]), lines[-1]
    for recipe, epochs in (("seed", 1), ("resnet18", 1), ("fast", 2)):
        reported = [line for line in lines if line.startswith(f"{recipe} ")]
        assert len(reported) == epochs, (recipe, lines)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
