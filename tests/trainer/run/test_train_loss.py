"""Issue 20 #10: train_loss and test_loss are the same quantity (plain cross-entropy), so the
curves and MLflow's chart that show them together compare like with like; label smoothing
changes what the optimizer minimises, not what is logged."""

from __future__ import annotations

import pytest
import torch

from trainer.contract.config import TrainConfig
from trainer.data.loading import load_dataset
from trainer.run import distributed
from trainer.run.loop import EpochRunner
from trainer.run.train import build_training


def first_step_loss(bundle, label_smoothing: float) -> float:
    env = distributed.DistEnv(0, 1, 0, 1, torch.device("cpu"))
    cfg = TrainConfig(dataset="digits", model="smallcnn", batch_size=64, epochs=2, lr=0.1,
                      log_every=10**6, label_smoothing=label_smoothing, augment="none")
    model, optimizer = build_training(cfg, env, bundle)
    runner = EpochRunner(cfg, env, model, optimizer, bundle)
    return runner.train_epoch(1, max_steps=1)["train_loss"]


def test_label_smoothing_does_not_change_the_logged_train_loss():
    """One step from the same weights on the same batch: the loss is measured before the
    update, so only what is logged could differ."""
    bundle = load_dataset("digits", None, seed=0)
    plain, smoothed = first_step_loss(bundle, 0.0), first_step_loss(bundle, 0.2)
    assert smoothed == pytest.approx(plain, rel=1e-5)


def test_the_curves_say_what_the_losses_are():
    from trainer.publish.figures import LOSS_LABEL

    assert "cross-entropy" in LOSS_LABEL and "label smoothing" in LOSS_LABEL
