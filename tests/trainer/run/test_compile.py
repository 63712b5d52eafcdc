"""TrainConfig.compile: the training steps run a torch.compile'd model that shares its
parameters with the module evaluation, checkpoints and the export use."""

from __future__ import annotations

import pytest
import torch

from trainer.contract.config import ConfigError, TrainConfig
from trainer.data.loading import load_dataset
from trainer.run import distributed
from trainer.run.loop import EpochRunner
from trainer.run.train import build_training


@pytest.mark.slow
def test_compiled_training_steps_update_the_plain_module():
    bundle = load_dataset("digits", None, seed=0)
    env = distributed.DistEnv(0, 1, 0, 1, torch.device("cpu"))
    cfg = TrainConfig(dataset="digits", model="fastcifar", batch_size=64, epochs=2, lr=0.1,
                      log_every=10**6, compile=True)
    model, optimizer = build_training(cfg, env, bundle)
    names = set(model.state_dict())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    runner = EpochRunner(cfg, env, model, optimizer, bundle)
    assert runner.model is not model and isinstance(runner.model, torch._dynamo.OptimizedModule)
    stats = runner.train_epoch(1, max_steps=2)
    assert torch.isfinite(torch.tensor(stats["train_loss"]))
    assert set(model.state_dict()) == names, "checkpoints and the export keep their names"
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert "classifier.weight" in changed and "whiten.weight" not in changed
    metrics, _ = runner.evaluate(model)
    assert 0.0 <= metrics["test_acc"] <= 1.0


def test_compile_is_operational_and_must_be_a_boolean():
    base = TrainConfig(model="fastcifar")
    assert TrainConfig(model="fastcifar", compile=True).defining_fields() == \
        base.defining_fields()
    with pytest.raises(ConfigError, match="compile: must be true or false, got 'yes'"):
        TrainConfig(compile="yes")


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_compile_without_a_compiler_says_so_before_training(device, monkeypatch, tmp_path):
    """Without a compiler torch.compile fails deep inside the first step; the run must
    stop at once with the setting and the remedy named."""
    from trainer.run.loop import require_compiler

    def stub(name: str) -> None:
        (tmp_path / name).write_text("#!/bin/sh\n")
        (tmp_path / name).chmod(0o755)

    monkeypatch.setenv("PATH", str(tmp_path))  # only the stubs below
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.delenv("CXX", raising=False)
    for name in ("cc", "c++", "clang++"):  # on PATH, but neither Triton nor Inductor uses them
        stub(name)
    with pytest.raises(ConfigError, match="compile: true needs a") as raised:
        require_compiler(torch.device(device))
    assert raised.value.key == "compile"
    stub("gcc" if device == "cuda" else "g++")
    require_compiler(torch.device(device))  # found: no error
