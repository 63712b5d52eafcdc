"""Two processes with the operator's env train together; the published program stands alone."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap

import pytest
import torch

from tests.testkit import free_port
from tests.trainer.runs import identity_of
from tests.trainer.trainer_procs import events, operator_env, start_trainer
from trainer.contract.config import TrainConfig
from trainer.contract.layout import ModelKeys
from trainer.data.augment import Normalizer
from trainer.data.loading import load_dataset
from trainer.models.zoo import build_model
from trainer.run.train import weights_digest

pytestmark = pytest.mark.slow

TRAIN_ARGS = ["train", "--dataset", "digits", "--model", "smallcnn", "--epochs", "1",
              "--batch-size", "32", "--lr", "0.05", "--seed", "3"]

# Runs in a fresh interpreter: only torch, never the project.
STANDALONE_PREDICT = textwrap.dedent("""
    import sys, torch
    program = torch.export.load(sys.argv[1])
    images = torch.load(sys.argv[2])
    logits = torch.cat([program.module()(images), program.module()(images[:1])])
    leaked = sorted(m for m in sys.modules if m == "trainer" or m.startswith("trainer."))
    assert not leaked, f"the exported program pulled in project modules: {leaked}"
    torch.save(logits, sys.argv[3])
""")


def train_two_ranks(store_env: dict[str, str], store_url: str) -> list[str]:
    port = free_port()
    procs = [start_trainer([*TRAIN_ARGS, "--store", store_url],
                           operator_env(rank, 2, port, store_env)) for rank in (0, 1)]
    outputs = [proc.communicate(timeout=240)[0] for proc in procs]
    for rank, (proc, output) in enumerate(zip(procs, outputs)):
        assert proc.returncode == 0, f"rank {rank} failed:\n{output[-3000:]}"
    return outputs


def standalone_logits(tmp_path, program_bytes: bytes, images: torch.Tensor) -> torch.Tensor:
    (tmp_path / "model.pt2").write_bytes(program_bytes)
    torch.save(images, tmp_path / "images.pt")
    subprocess.run([sys.executable, "-c", STANDALONE_PREDICT, str(tmp_path / "model.pt2"),
                    str(tmp_path / "images.pt"), str(tmp_path / "logits.pt")],
                   cwd=tmp_path, check=True, timeout=120)
    return torch.load(tmp_path / "logits.pt")


@pytest.mark.parametrize("store_kind", ["local", "s3"])
def test_two_ranks_train_identical_replicas_and_export_stands_alone(
        store_kind, request, tmp_path):
    store = request.getfixturevalue(f"{store_kind}_store")
    store.ensure_buckets()
    store_env = request.getfixturevalue("s3_env") if store_kind == "s3" else {}
    outputs = train_two_ranks(store_env, store.url)

    trained = [events(output, "trained")[0] for output in outputs]
    assert [t["rank"] for t in trained] == [0, 1]
    assert trained[0]["weights_sha256"] == trained[1]["weights_sha256"]
    assert events(outputs[0], "start")[0]["world_size"] == 2
    assert len(events(outputs[0], "epoch")) == 1 and not events(outputs[1], "epoch")

    cfg = TrainConfig(dataset="digits", model="smallcnn", epochs=1, batch_size=32, lr=0.05,
                      seed=3)
    run_id = identity_of(cfg).run_id
    assert not store.list(ModelKeys(cfg.model_name).run(run_id)), "published: none kept"
    name = cfg.model_name
    version = json.loads(store.get_bytes(f"models/{name}/latest.json"))["version"]
    meta = json.loads(store.get_bytes(f"models/{name}/versions/{version}/meta.json"))
    assert meta["run_id"] == run_id and meta["input_size"] == [1, 8, 8]
    metrics = json.loads(store.get_bytes(f"models/{name}/versions/{version}/metrics.json"))
    assert metrics["world_size"] == 2
    model = torch.export.load(io.BytesIO(
        store.get_bytes(f"models/{name}/versions/{version}/model.pt2"))).module()
    published = build_model("smallcnn", in_channels=1, num_classes=10)
    published.load_state_dict(model.state_dict())
    assert weights_digest(published) == trained[0]["weights_sha256"]
    model = published
    bundle = load_dataset("digits", None, seed=3)
    images = Normalizer(meta["mean"], meta["std"])(bundle.test.images)
    with torch.no_grad():
        expected = model.eval()(images)
    program = store.get_bytes(f"models/{name}/versions/{version}/model.pt2")
    logits = standalone_logits(tmp_path, program, images)
    assert logits.shape == (len(images) + 1, 10)
    torch.testing.assert_close(logits[:-1], expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(logits[-1], expected[0], rtol=1e-4, atol=1e-4)
    assert torch.equal(logits[:-1].argmax(1), expected.argmax(1))
