"""RNG state in checkpoints: only this rank's CUDA generator, old list format tolerated."""

from __future__ import annotations

import logging
import random

import numpy as np
import pytest
import torch

from trainer.contract.config import MODELS
from trainer.state import checkpoint


def _old_format_state(cuda_states) -> dict:
    """A checkpoint's ``rng`` as written before: one CUDA state per visible GPU."""
    state = checkpoint.rng_state(torch.device("cpu"))
    state["cuda"] = cuda_states
    return state


def test_cpu_round_trip_restores_every_generator(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    state = checkpoint.rng_state(torch.device("cpu"))
    assert state["cuda"] is None
    expected = (torch.rand(3), random.random(), np.random.rand())
    checkpoint.set_rng_state(state, torch.device("cpu"))
    assert torch.equal(torch.rand(3), expected[0])
    assert (random.random(), np.random.rand()) == expected[1:]


@pytest.mark.parametrize("cuda_states", [[torch.zeros(16, dtype=torch.uint8)] * 2, [],
                                         torch.zeros(16, dtype=torch.uint8), None])
def test_cuda_states_are_skipped_without_cuda(monkeypatch, cuda_states):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    def must_not_run(*args, **kwargs):
        raise AssertionError("CUDA RNG touched without CUDA")

    monkeypatch.setattr(torch.cuda, "set_rng_state", must_not_run)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", must_not_run)
    checkpoint.set_rng_state(_old_format_state(cuda_states), None)
    checkpoint.set_rng_state(_old_format_state(cuda_states), torch.device("cpu"))


def _fake_cuda(monkeypatch) -> list:
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_rng_state",
                        lambda state, device: restored.append((int(state[0]), device)))
    return restored


def test_old_list_uses_this_local_ranks_entry(monkeypatch):
    restored = _fake_cuda(monkeypatch)
    states = [torch.full((4,), i, dtype=torch.uint8) for i in range(4)]
    checkpoint.set_rng_state(_old_format_state(states), torch.device("cuda", 2))
    assert restored == [(2, torch.device("cuda", 2))]


def test_old_list_without_this_ranks_entry_is_skipped_with_a_log_line(monkeypatch, caplog):
    """Saved on a pod with 1 GPU, resumed as local rank 1 of a pod with 2: no IndexError."""
    restored = _fake_cuda(monkeypatch)
    caplog.set_level(logging.INFO, logger="trainer.state.checkpoint")
    state = _old_format_state([torch.full((4,), 7, dtype=torch.uint8)])
    checkpoint.set_rng_state(state, torch.device("cuda", 1))
    assert restored == [] and "none for cuda:1" in caplog.text


def test_new_format_restores_the_single_state_on_this_device(monkeypatch):
    restored = _fake_cuda(monkeypatch)
    state = _old_format_state(torch.full((4,), 5, dtype=torch.uint8))
    checkpoint.set_rng_state(state, torch.device("cuda", 3))
    assert restored == [(5, torch.device("cuda", 3))]


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_training_draws_nothing_from_the_global_generators(model):
    """A checkpoint carries rank 0's global generators only, and every rank restores them:
    exact as long as training draws from them on no rank (each step's augmentation has a
    generator of its own, seeded from the plan and the step). A model that draws (dropout)
    would need every rank's states in the checkpoint to resume bit-identically."""
    from trainer.contract.config import TrainConfig
    from trainer.data.loading import load_dataset
    from trainer.run.distributed import process_env
    from trainer.run.loop import EpochRunner
    from trainer.run.train import build_training

    cfg = TrainConfig(dataset="synthetic", model=model, epochs=1, batch_size=8, lr=0.05, seed=3,
                      image_size=16, synthetic_size=64, augment="crop+flip")
    env = process_env()
    bundle = load_dataset("synthetic", None, image_size=16, synthetic_size=64, seed=3)
    net, optimizer = build_training(cfg, env, bundle)
    before = checkpoint.rng_state(env.device)
    EpochRunner(cfg, env, net, optimizer, bundle).train_epoch(1, max_steps=2)
    after = checkpoint.rng_state(env.device)
    assert torch.equal(before["torch"], after["torch"])
    assert (before["python"], before["numpy"]) == (after["python"], after["numpy"])
