"""fastcifar's data-dependent whitening stem: what it computes, that every rank gets rank 0's,
and that a resumed run takes it from its checkpoint instead of computing it again."""

from __future__ import annotations

import io

import pytest
import torch
import torch.multiprocessing as mp

from tests.testkit import free_port
from trainer.contract.config import TrainConfig
from trainer.contract.layout import ModelKeys
from trainer.data.augment import Normalizer
from trainer.data.dataset import DatasetBundle, Split
from trainer.models.fastcifar import WHITEN_EPS, FastCIFAR
from trainer.models.zoo import FlipAveraged, served_model
from trainer.run import distributed, train
from trainer.state.checkpoint import TrainingState


def smooth_images(n: int, seed: int, channels: int = 3, size: int = 16) -> torch.Tensor:
    """uint8 images whose neighbouring pixels and channels are strongly correlated, like photos."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 1, size // 4, size // 4, generator=gen)
    tint = torch.rand(n, channels, 1, 1, generator=gen) * 0.3
    fine = torch.nn.functional.interpolate(coarse, size=size, mode="bilinear")
    noise = torch.rand(n, channels, size, size, generator=gen) * 0.1
    return ((fine * 0.6 + tint + noise).clamp(0, 1) * 255).round().to(torch.uint8)


def bundle_of(images: torch.Tensor) -> DatasetBundle:
    labels = torch.arange(len(images)) % 10
    split = Split(images, labels)
    channels = images.shape[1]
    return DatasetBundle("synthetic", split, split, [str(i) for i in range(10)],
                         (0.5,) * channels, (0.25,) * channels, "generated:test")


def stem_patch_covariance(model: FastCIFAR, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model.whiten(images)  # before the activation
    flat = out.permute(0, 2, 3, 1).reshape(-1, out.shape[1]).double()
    flat = flat - flat.mean(0)
    return flat.T @ flat / len(flat)


def test_the_stem_whitens_the_patches_it_was_fitted_on():
    images = Normalizer((0.5,) * 3, (0.25,) * 3)(smooth_images(256, seed=0))
    model = FastCIFAR(in_channels=3, num_classes=10)
    before = stem_patch_covariance(model, images)
    model.init_from_data(images.split(100))  # batch by batch: the same as all at once
    covariance = stem_patch_covariance(model, images)
    half = covariance.shape[0] // 2  # the second half are the first half's negatives
    torch.testing.assert_close(model.whiten.weight[half:], -model.whiten.weight[:half])
    decorrelated = covariance[:half, :half]
    off_diagonal = decorrelated - torch.diag(torch.diag(decorrelated))
    assert off_diagonal.abs().max() < 1e-3 < (before - torch.diag(torch.diag(before))).abs().max()
    variances = torch.diag(decorrelated)
    # each component's variance becomes eigenvalue / (eigenvalue + eps): about 1 where the
    # data varies, and never above 1; ordered from the strongest component down
    assert variances.max() <= 1 + 1e-6 and variances[0] > 0.99
    assert torch.all(variances[:-1] >= variances[1:] - 1e-6)
    assert not model.whiten.weight.requires_grad, "the stem is set from data, not trained"
    assert torch.all(model.whiten.bias == 0)
    assert WHITEN_EPS > 0


def test_the_stem_is_a_function_of_the_images_alone_and_checks_their_shape():
    images = Normalizer((0.5,), (0.25,))(smooth_images(64, seed=1, channels=1, size=8))
    first, second = (FastCIFAR(in_channels=1, num_classes=10) for _ in range(2))
    first.init_from_data([images])
    second.init_from_data(images.clone().split(7))
    torch.testing.assert_close(first.whiten.weight, second.whiten.weight)
    with pytest.raises(ValueError, match="do not fit the stem"):
        first.init_from_data([torch.zeros(4, 3, 8, 8)])
    with pytest.raises(ValueError, match="at least 2x2"):
        first.init_from_data([torch.zeros(4, 1, 1, 1)])
    with pytest.raises(ValueError, match="no images"):
        first.init_from_data([])


def _init_on_rank(rank: int, port: int, results) -> None:
    import os

    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2",
                       "RANK": str(rank), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": "2"})
    env = distributed.init_distributed()
    try:
        torch.manual_seed(0)
        model = FastCIFAR(in_channels=3, num_classes=10)
        # Each rank sees other images: only rank 0's may shape the stem.
        train.init_from_training_data(model, bundle_of(smooth_images(64, seed=10 + rank)), env)
        # plain lists: a shared tensor would die with this process
        results.put((rank, model.whiten.weight.tolist(), model.classifier.weight.tolist()))
    finally:
        distributed.cleanup()


@pytest.mark.slow
def test_every_rank_starts_from_rank_0s_stem():
    ctx = mp.get_context("spawn")
    results = ctx.SimpleQueue()
    mp.spawn(_init_on_rank, args=(free_port(), results), nprocs=2, join=True)
    found = {rank: (torch.tensor(stem), torch.tensor(head))
             for rank, stem, head in (results.get(), results.get())}
    expected = FastCIFAR(in_channels=3, num_classes=10)
    expected.init_from_data([Normalizer((0.5,) * 3, (0.25,) * 3)(smooth_images(64, seed=10))])
    for rank in (0, 1):
        torch.testing.assert_close(found[rank][0], expected.whiten.weight, rtol=0, atol=0)
    torch.testing.assert_close(found[0][1], found[1][1], rtol=0, atol=0)


class StopAfter(Exception):
    pass


def test_a_resumed_run_takes_the_stem_from_its_checkpoint(local_store, monkeypatch):
    """Recomputing it on resume could give other weights (other images, another machine's
    eigensolver); the checkpoint's are the ones the run trained with."""
    local_store.ensure_buckets()
    cfg = TrainConfig(dataset="digits", model="fastcifar", epochs=2, batch_size=64, lr=0.05,
                      seed=4)
    real_run_epoch, real_init = train.run_epoch, FastCIFAR.init_from_data
    inits = []

    def first_epoch_only(runner, model, epoch, *position):
        if epoch == 2:
            raise StopAfter
        return real_run_epoch(runner, model, epoch, *position)

    def counted_init(self, batches):
        batches = list(batches)
        inits.append(sum(len(images) for images in batches))
        real_init(self, batches)

    monkeypatch.setattr(train, "run_epoch", first_epoch_only)
    monkeypatch.setattr(FastCIFAR, "init_from_data", counted_init)
    with pytest.raises(StopAfter):
        train.run_training(cfg, local_store)
    assert inits == [min(train.DATA_INIT_IMAGES, 1437)], "a fresh run whitens once"
    (key,) = local_store.list("models/fastcifar-digits/runs/")
    saved = TrainingState.from_checkpoint(torch.load(io.BytesIO(local_store.get_bytes(key)),
                                                     weights_only=True), key)
    # the stem the run trained with: not what a default init gives
    assert not torch.equal(saved.model["whiten.weight"],
                           FastCIFAR(in_channels=1, num_classes=10).whiten.weight)

    def refuse(self, batches):
        raise AssertionError("a resumed run must not whiten again")

    monkeypatch.setattr(train, "run_epoch", real_run_epoch)
    monkeypatch.setattr(FastCIFAR, "init_from_data", refuse)
    version = train.run_training(cfg, local_store)
    program = torch.export.load(io.BytesIO(local_store.get_bytes(
        ModelKeys(cfg.model_name).version_file(version, "model.pt2"))))
    assert torch.equal(program.state_dict["whiten.weight"], saved.model["whiten.weight"])


def test_test_flip_averages_an_image_and_its_mirror_image():
    torch.manual_seed(0)
    model = FastCIFAR(in_channels=3, num_classes=10).eval()
    images = torch.randn(5, 3, 12, 12)
    flipped = served_model(model, True)
    assert isinstance(flipped, FlipAveraged) and served_model(model, False) is model
    with torch.no_grad():
        expected = (model(images) + model(images.flip(3))) / 2
        torch.testing.assert_close(flipped(images), expected)
        torch.testing.assert_close(flipped(images.flip(3)), expected)  # mirror-invariant
