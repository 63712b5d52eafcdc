"""The progress bar of an epoch resumed mid-way (the same plan goes on at its step)."""

from __future__ import annotations

import io
import sys

import torch

from trainer.contract.config import TrainConfig
from trainer.run import distributed
from trainer.run.loop import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_resumed_epochs_bar_starts_at_the_step_it_resumes_from(monkeypatch):
    """Resumed at step 4 of 10 with the same world size, the bar counted 6 of 10 at the
    epoch's end: it stopped at 60 %."""
    monkeypatch.setattr(sys, "stderr", Terminal())
    cfg = TrainConfig(dataset="digits", model="smallcnn", batch_size=64, epochs=2, lr=0.1)
    env = distributed.DistEnv(0, 1, 0, 1, torch.device("cpu"))
    progress = Progress(cfg, env, 1, 10, first=4)
    for step in range(5, 11):
        progress.update(step, torch.tensor(1.0), 0.1)
    assert (progress.bar.n, progress.bar.total) == (10, 10)
    progress.close()
