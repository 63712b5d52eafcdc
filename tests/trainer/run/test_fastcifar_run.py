"""fastcifar through the real trainer: two processes train it, a kill after the first
checkpoint resumes, and the published program predicts what evaluation measured."""

from __future__ import annotations

import io
import json

import pytest
import torch

from tests.testkit import free_port
from tests.trainer.publish.test_ddp_export import standalone_logits
from tests.trainer.run.test_resume import kill_after_checkpoint
from tests.trainer.runs import identity_of
from tests.trainer.trainer_procs import events, operator_env, start_trainer
from trainer.contract.config import TrainConfig
from trainer.contract.layout import ModelKeys
from trainer.data.augment import Normalizer
from trainer.data.loading import load_dataset
from trainer.data.streaming.position import EpochPosition
from trainer.models.fastcifar import FastCIFAR
from trainer.models.zoo import FlipAveraged
from trainer.run import distributed
from trainer.run.loop import EpochRunner
from trainer.run.train import build_training, init_from_training_data, run_training, weights_digest
from trainer.state.checkpoint import TrainingState, save_checkpoint

pytestmark = pytest.mark.slow

# crop+flip on digits only to exercise test-time flip (auto turns it on with flip)
CONFIG = {"dataset": "digits", "model": "fastcifar", "epochs": 3, "batch_size": 32,
          "lr": 0.1, "seed": 2, "augment": "crop+flip", "log_every": 10}


def start_ranks(args: list[str]) -> list:
    port = free_port()
    return [start_trainer(args, operator_env(rank, 2, port)) for rank in (0, 1)]


def finish(procs) -> list[str]:
    outputs = [proc.communicate(timeout=240)[0] for proc in procs]
    for rank, (proc, output) in enumerate(zip(procs, outputs)):
        assert proc.returncode == 0, f"rank {rank} failed:\n{output[-3000:]}"
    return outputs


def test_two_ranks_train_resume_and_publish_what_they_evaluated(local_store, tmp_path):
    local_store.ensure_buckets()
    config_file = tmp_path / "train.json"
    config_file.write_text(json.dumps(CONFIG))
    args = ["train", "--config", str(config_file), "--store", local_store.url]
    cfg = TrainConfig.from_dict(CONFIG)
    assert cfg.recipe.test_flip
    keys, run_id = ModelKeys(cfg.model_name), identity_of(cfg).run_id

    kill_after_checkpoint(start_ranks(args), 1)
    first = keys.checkpoint(run_id, 1)
    saved = TrainingState.from_checkpoint(
        torch.load(io.BytesIO(local_store.get_bytes(first)), weights_only=True), first)

    outputs = finish(start_ranks(args))
    (resumed,) = events(outputs[0], "resume")
    assert resumed["epoch"] >= 1 and resumed["saved_world_size"] == 2
    trained = [events(output, "trained")[0] for output in outputs]
    assert trained[0]["weights_sha256"] == trained[1]["weights_sha256"]

    version = json.loads(local_store.get_bytes(keys.latest))["version"]
    meta = json.loads(local_store.get_bytes(keys.meta(version)))
    metrics = json.loads(local_store.get_bytes(keys.version_file(version, "metrics.json")))
    assert meta["run_id"] == run_id and meta["model_revision"].startswith("fastcifar@")
    program_bytes = local_store.get_bytes(keys.version_file(version, "model.pt2"))
    program = torch.export.load(io.BytesIO(program_bytes))
    # The stem the run was whitened with at its start, carried through the resume.
    assert torch.equal(program.state_dict["model.whiten.weight"], saved.model["whiten.weight"])

    model = FlipAveraged(FastCIFAR(in_channels=1, num_classes=10))
    model.load_state_dict(program.module().state_dict())
    assert weights_digest(model.model) == trained[0]["weights_sha256"]
    bundle = load_dataset("digits", None, seed=CONFIG["seed"])
    images = Normalizer(meta["mean"], meta["std"])(bundle.test.images)
    with torch.no_grad():
        expected = model.eval()(images)
    logits = standalone_logits(tmp_path, program_bytes, images)[:-1]
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)
    accuracy = (logits.argmax(1) == bundle.test.labels).double().mean().item()
    assert accuracy == pytest.approx(metrics["epochs"][-1]["test_acc"], abs=1e-5)
    assert accuracy > 0.5, "three epochs of digits learn something"


def test_a_first_epoch_mid_epoch_checkpoint_keeps_its_stem(local_store):
    """Issue 28 #2: a mid-epoch checkpoint taken in the first epoch has epoch 0; resuming
    it ran the fresh run's data-dependent initialisation again on the restored model: the
    stem was recomputed (its eigenvectors' signs are the eigensolver's, which may differ
    between machines) and the trained whitening bias zeroed. The checkpoint here is one
    such machine's: its stem's signs flipped."""
    local_store.ensure_buckets()
    cfg = TrainConfig.from_dict({**CONFIG, "epochs": 1, "checkpoint_every_steps": 10})
    env = distributed.process_env()
    bundle = load_dataset(cfg.dataset, None, seed=cfg.seed)
    identity = identity_of(cfg)
    model, optimizer = build_training(cfg, env, bundle)
    init_from_training_data(model, bundle, env)
    with torch.no_grad():
        model.whiten.weight.neg_()
        model.whiten.bias.copy_(torch.linspace(-0.02, 0.02, len(model.whiten.bias)))
    stem = model.whiten.weight.clone()
    state = TrainingState.fresh(identity)
    position = EpochPosition(EpochRunner(cfg, env, model, optimizer, bundle).plan(1), 10)
    state.position = position.to_dict()
    state.capture(model, optimizer, env.device)
    key = ModelKeys(cfg.model_name).mid_epoch_checkpoint(identity.run_id, 0, position.trained)
    save_checkpoint(local_store, key, state)

    version = run_training(cfg, local_store)
    keys = ModelKeys(cfg.model_name)
    program = torch.export.load(io.BytesIO(local_store.get_bytes(
        keys.version_file(version, "model.pt2"))))
    assert torch.equal(program.state_dict["model.whiten.weight"], stem), \
        "the resumed run's stem was recomputed"
