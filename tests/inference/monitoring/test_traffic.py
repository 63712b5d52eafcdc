"""`make demo-traffic`'s command against a running app serving a model the trainer really
trained (digits): in-distribution traffic checks green, darker pictures turn it red; a
reference published by the trainer describes the version (its own test accuracy)."""

from __future__ import annotations

import subprocess
import sys

from tests.inference.inference_helpers import serve_app, wait_until
from tests.trainer.trainer_procs import run_trainer, trainer_env
from trainer.contract.layout import ModelKeys
from trainer.contract.lifecycle.monitoring import Reference
from trainer.contract.schema import VersionMeta

WINDOW = 128


def traffic(base: str, store: str, shift: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "inference", "traffic", "--url", base,
                           "--store", store, "--shift", shift, "--count", str(2 * WINDOW)],
                          capture_output=True, text=True, timeout=300, check=False)


def test_traffic_turns_a_trained_models_monitoring_from_green_to_red(local_store, tmp_path):
    for args in (["buckets"], ["train", "--dataset", "digits", "--model", "smallcnn",
                               "--epochs", "3", "--batch-size", "64"]):
        done = run_trainer([*args, "--store", local_store.url], trainer_env())
        assert done.returncode == 0, done.stdout[-2000:]
    keys = ModelKeys("smallcnn-digits")
    version = local_store.get_bytes(keys.latest).decode().split('"version": "')[1].split('"')[0]
    meta = VersionMeta.from_json(local_store.get_bytes(keys.meta(version)))
    reference = Reference.from_json(local_store.get_bytes(keys.version_file(version,
                                                                            meta.reference)))
    assert reference.test_accuracy == meta.metrics.test_acc
    assert reference.n == 359 and reference.ece_after <= reference.ece_before + 0.01
    with serve_app(local_store.url, tmp_path / "cache", monitor_window=WINDOW) as (base, app):
        wait_until(lambda: app.state.registry.current, "the model")
        for shift in ("none", "dark"):
            done = traffic(base, local_store.url, shift)
            assert done.returncode == 0, done.stderr
            assert f"shift: {shift}" in done.stderr
        assert app.state.monitor.recorder.flush()
        verdicts = [r.drift for r in app.state.monitor.reports("smallcnn-digits", version)]
    assert verdicts == [False, False, True, True]


def test_traffic_says_so_when_no_app_answers(tmp_path):
    done = traffic("http://127.0.0.1:9", str(tmp_path), "none")
    assert done.returncode == 1 and "does not answer" in done.stderr
