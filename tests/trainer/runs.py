"""The identity of a run as the trainer computes it, for tests that look up its keys."""

from __future__ import annotations

from trainer.contract.config import RunIdentity, TrainConfig
from trainer.data.loading import load_dataset
from trainer.models.zoo import model_revision


def identity_of(cfg: TrainConfig, store=None) -> RunIdentity:
    """``cfg``'s run on the data ``store`` holds now (digits and synthetic need no store)."""
    bundle = load_dataset(cfg.dataset, store, prefix=cfg.data_prefix, image_size=cfg.image_size,
                          synthetic_size=cfg.synthetic_size, seed=cfg.seed)
    return RunIdentity(cfg, bundle.fingerprint, model_revision(cfg.model))
