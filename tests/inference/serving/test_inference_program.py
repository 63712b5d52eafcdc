"""The frozen program (inference.serving.runner): the same answers as the published program at
every batch size, and the published program served wherever a trace would differ."""

from __future__ import annotations

import ctypes
import dataclasses
import gc

import numpy as np
import pytest
import torch

from inference.published.versions import download_version
from inference.serving.runner import Runner
from tests.inference.modelkit import CNN_NAME, MODEL_NAME, publish_cnn, publish_version
from trainer.store import LocalStore


class BatchBranch(torch.nn.Module):
    """Python control flow on the batch size: a trace records only the branch it took."""

    def __init__(self):
        super().__init__()
        self.head = torch.nn.Linear(3, 3)

    def forward(self, x):
        mean = x.mean(dim=(2, 3))
        return self.head(mean) if x.shape[0] == 2 else self.head(mean).flip(1)


class BigConvNet(torch.nn.Module):
    """~27 MiB of convolution weights with batch norm (what freezing folds): a copy kept
    per runner shows plainly in the process's RSS."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 512, 3, padding=1)
        self.conv = torch.nn.Conv2d(512, 1536, 3, padding=1, bias=False)
        self.norm = torch.nn.BatchNorm2d(1536)
        self.head = torch.nn.Linear(1536, 3)

    def forward(self, x):
        x = torch.relu(self.norm(self.conv(torch.relu(self.stem(x)))))
        return self.head(x.mean(dim=(2, 3)))


def rss_mib() -> float:
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap pages back, as a server would
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20


def pixels(batch: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return list(rng.integers(0, 256, (batch, 3, 32, 32), dtype=np.uint8))


def test_the_frozen_program_answers_as_the_published_one_at_every_batch_size(tmp_path):
    store = LocalStore(tmp_path / "store")
    version = download_version(store, CNN_NAME, publish_cnn(store, "20260101T000000Z"),
                               tmp_path / "cache")
    frozen, eager = Runner(version, "fp32", "frozen"), Runner(version, "fp32", "eager")
    assert (frozen.program, eager.program) == ("frozen", "eager")
    assert isinstance(frozen.model, torch.jit.ScriptModule)
    for batch in (1, 2, 5, 16):
        items = pixels(batch, batch)
        assert np.abs(np.array(frozen(items)) - np.array(eager(items))).max() < 1e-5, batch


def test_a_program_whose_trace_differs_is_served_as_published(tmp_path, caplog):
    store = LocalStore(tmp_path / "store")
    published = download_version(store, MODEL_NAME, publish_version(store, "20260101T000000Z"),
                                 tmp_path / "cache")
    # A program with Python control flow on the batch size (a torch.export would refuse
    # or specialise it; a program loaded otherwise may have it).
    version = dataclasses.replace(published, model=BatchBranch().eval())
    items = [np.full((3, 8, 8), 9 * i, np.uint8) for i in range(3)]
    runner = Runner(version, "fp32", "frozen")
    assert runner.program == "eager"
    assert "served eager" in caplog.text and "differ" in caplog.text
    assert np.allclose(runner(items), Runner(version, "fp32", "eager")(items))


def test_an_unknown_program_is_refused():
    from inference.serving.engine import EngineConfig
    from trainer.contract.errors import ConfigError

    with pytest.raises(ConfigError, match="program = 'jit'.*allowed: frozen, eager"):
        EngineConfig(program="jit")
    with pytest.raises(ConfigError, match="decode = 'fast'.*allowed: draft, full"):
        EngineConfig(decode="fast")


def test_a_dropped_frozen_runner_leaves_no_copy_of_the_weights(tmp_path):
    """The engine builds a runner per version and keeps three: each one dropped must give
    its memory back (freezing the traced module itself kept every weight: +27 MiB here per
    runner, for good)."""
    store = LocalStore(tmp_path / "store")
    published = download_version(store, MODEL_NAME, publish_version(store, "20260101T000000Z"),
                                 tmp_path / "cache")
    version = dataclasses.replace(published, model=BigConvNet().eval())
    items = [np.full((3, 8, 8), 50, np.uint8)]
    Runner(version, "fp32", "frozen")(items)  # the first build allocates for good
    before = rss_mib()
    for _ in range(6):
        runner = Runner(version, "fp32", "frozen")
        assert runner.program == "frozen"
        runner(items)
        del runner
    grown = rss_mib() - before
    assert grown < 40, f"RSS grew {grown:.0f} MiB over 6 runners of a 27 MiB model"
