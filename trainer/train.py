"""`python -m trainer train`: set up, resume, train every remaining epoch, publish.

Only rank 0 writes to the store (checkpoints, the published version); every rank
reads the same checkpoint on start, so a run resumes after a crash, a pod restart or
a rescale to another world size.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from trainer import checkpoint, distributed
from trainer.checkpoint import TrainingState
from trainer.config import TrainConfig
from trainer.layout import ModelKeys
from trainer.loop import EpochRunner
from trainer.models import build_model
from trainer.onepixel import use_one_pixel_convs
from trainer.publish import TrainingResult, finish_publication, publish, published_version_of
from trainer.schema import EpochRecord
from trainer.storage import Store

log = logging.getLogger(__name__)


def weights_digest(model: nn.Module) -> str:
    """sha256 over the state dict: equal on every rank iff the replicas are identical."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def build_training(cfg: TrainConfig, env: distributed.DistEnv, bundle):
    """Model (channels_last, on the device) and its Nesterov-SGD optimizer."""
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    in_channels = bundle.train.images.shape[1]
    model = build_model(cfg.model, in_channels=in_channels, num_classes=len(bundle.classes))
    model = model.to(env.device, memory_format=torch.channels_last)
    if env.device.type == "cpu":  # measured on CPU only; cuDNN has its own kernels
        use_one_pixel_convs(model)
    # fused: one kernel for all parameters; PyTorch's CPU default is a Python loop per
    # parameter, which costs a few percent of a ResNet-18 step (bench/train_throughput.py).
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay, nesterov=True, fused=True)
    return model, optimizer


def resume(store: Store, cfg: TrainConfig, env, model, optimizer) -> TrainingState:
    """The newest complete checkpoint (chosen by rank 0) loaded into every rank, or a fresh state."""
    found = None
    if env.is_main:
        found = checkpoint.newest_loadable(store, cfg.model_name, cfg.run_id)
    key = distributed.broadcast_object(found[0] if found else None)
    if key is None:
        return TrainingState(run_id=cfg.run_id, config=cfg.to_dict())
    state = found[1] if env.is_main else checkpoint.load_checkpoint(store, key)
    state.restore(model, optimizer, env.device)
    log.info(json.dumps({"event": "resume", "run_id": cfg.run_id, "checkpoint": key,
                         "epoch": state.epoch, "saved_world_size": state.world_size,
                         "world_size": env.world_size}))
    return state


def run_training(cfg: TrainConfig, store: Store) -> str | None:
    """Train the run of ``cfg`` to the end; rank 0 returns the published version."""
    from trainer.data import load_dataset

    env = distributed.init_distributed()
    threads = distributed.configure_cpu_threads(env) if env.device.type == "cpu" else None
    log.info(json.dumps({"event": "start", "run_id": cfg.run_id, "model": cfg.model_name,
                         "rank": env.rank, "world_size": env.world_size,
                         "device": str(env.device), "cpu_threads": threads,
                         "config": cfg.to_dict()}))
    bundle = load_dataset(cfg.dataset, store, prefix=cfg.data_prefix, image_size=cfg.image_size,
                          synthetic_size=cfg.synthetic_size, seed=cfg.seed)
    model, optimizer = build_training(cfg, env, bundle)
    state = resume(store, cfg, env, model, optimizer)
    train_model = model
    if env.world_size > 1:
        device_ids = [env.device.index] if env.device.type == "cuda" else None
        train_model = DistributedDataParallel(model, device_ids=device_ids)
    runner = EpochRunner(cfg, env, train_model, optimizer, bundle)
    keys = ModelKeys(cfg.model_name)
    for epoch in range(state.epoch + 1, cfg.epochs + 1):
        record, confusion = run_epoch(runner, model, epoch)
        state.record_epoch(record, confusion, env.world_size)
        if env.is_main:
            state.capture(model, optimizer, env.device)
            checkpoint.save_checkpoint(store, keys.checkpoint(cfg.run_id, epoch), state)
    log.info(json.dumps({"event": "trained", "run_id": cfg.run_id, "rank": env.rank,
                         "epochs": len(state.history), "weights_sha256": weights_digest(model)}))
    if not env.is_main:
        return None
    version = published_version_of(store, cfg.model_name, cfg.run_id)
    if version is not None:
        # A restart after publication (or after a crash in its last steps) reuses it.
        finish_publication(store, cfg.model_name, version)
        log.info("run %s is already published as version %s", cfg.run_id, version)
        return version
    return publish(store, TrainingResult(cfg, model, bundle, state))


def run_epoch(runner: EpochRunner, model: nn.Module, epoch: int) -> tuple[EpochRecord, list]:
    """Train + evaluate one epoch and log its structured line."""
    start = time.perf_counter()
    train = runner.train_epoch(epoch)
    # DDP keeps gradients in sync but each rank updates BatchNorm stats on its own shard.
    distributed.average_buffers(model)
    test, confusion = runner.evaluate(model)
    values = {"train_loss": train["train_loss"], "train_acc": train["train_acc"],
              "test_loss": test["test_loss"], "test_acc": test["test_acc"],
              "img_per_s": train["img_per_s"], "seconds": time.perf_counter() - start}
    record = EpochRecord(epoch=epoch, **{k: round(v, 5) for k, v in values.items()})
    if runner.env.is_main:
        log.info(json.dumps({"event": "epoch", "epochs": runner.cfg.epochs, **record.to_dict()}))
    return record, confusion
