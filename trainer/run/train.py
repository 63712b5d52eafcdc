"""`python -m trainer train`: load the data, resume, train every remaining epoch, publish.

Only rank 0 writes to the store (checkpoints, the published version); every rank reads the
same checkpoint on start, so a run resumes after a crash, a pod restart or a rescale to
another world size.

Only training needs the peers. Every rank loads its data before any rendezvous: the data's
fingerprint is part of the run's identity, so each rank can tell whether the run is already
trained. If it is, rank 0 publishes (or finishes publishing) alone and the others exit at
once: the operator restarts a failed Master without its Workers, which already exited 0.
After the last epoch every rank waits until rank 0's final checkpoint is durable, so no rank
succeeds while the run could still be lost; ranks that loaded different data (an ingest
between their loads) stop with an error instead of training on different data.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from trainer.contract.config import RunIdentity, TrainConfig
from trainer.contract.errors import DatasetError, MetaError, StoreError, TrainstackError
from trainer.contract.layout import METRICS_FILE, ModelKeys
from trainer.contract.schema import EpochRecord, VersionMetrics
from trainer.data.augment import Normalizer
from trainer.data.budget import training_footprint
from trainer.models.onepixel import use_one_pixel_convs
from trainer.models.zoo import build_model, model_revision
from trainer.publish.latest import latest_version
from trainer.publish.publication import (
    TrainingResult,
    finish_publication,
    publish,
    published_version_of,
)
from trainer.run import distributed, mid_epoch, stopping
from trainer.run.loop import EpochRunner
from trainer.state import checkpoint
from trainer.state.checkpoint import TrainingState, UnusableCheckpoint
from trainer.store import Store
from trainer.store.lease import RunLease, run_lease
from trainer.tracking import reporting

log = logging.getLogger(__name__)

# Training images a data-dependent initialisation sees: spread evenly over the split (an
# imagefolder's images come sorted by class), enough for fastcifar's 12 x 12 covariance.
DATA_INIT_IMAGES = 1024
DATA_INIT_PIXELS = 1 << 20


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


def resume(store: Store, identity: RunIdentity, env, model, optimizer) -> TrainingState | None:
    """The newest checkpoint that fits (chosen by rank 0) loaded into every rank; None when
    there is none (a fresh run)."""
    found = checkpoint.newest_resumable(store, identity, model) if env.is_main else None
    key = distributed.broadcast_object(found[0] if found else None)
    if key is None:
        return None
    state = found[1] if env.is_main else checkpoint.load_fitting(store, key, identity, model)
    state.restore(model, optimizer, env.device)
    log.info(json.dumps({"event": "resume", "run_id": identity.run_id, "checkpoint": key,
                         "epoch": state.epoch, "saved_world_size": state.world_size,
                         "world_size": env.world_size, **mid_epoch.resumed(state)}))
    return state


def init_from_training_data(model: nn.Module, bundle, env: distributed.DistEnv) -> None:
    """A fresh run's data-dependent initialisation (a model's ``init_from_data``, such as
    fastcifar's whitening stem), computed by rank 0 and broadcast: every rank starts from the
    same weights even where floating point or an eigensolver's sign choices differ."""
    if not hasattr(model, "init_from_data"):
        return
    if env.is_main:
        images = bundle.train.images
        sample = images[::max(1, len(images) // DATA_INIT_IMAGES)][:DATA_INIT_IMAGES]
        normalize = Normalizer(bundle.mean, bundle.std)
        # Chunks of about DATA_INIT_PIXELS pixels: bounded memory for large images too.
        per_chunk = max(1, DATA_INIT_PIXELS // (images.shape[-2] * images.shape[-1]))
        model.init_from_data(normalize(chunk) for chunk in sample.split(per_chunk))
    distributed.broadcast_state(model)


def check_same_data(fingerprint: str, env: distributed.DistEnv) -> None:
    """Every rank stops, with the same message, unless all loaded the same data."""
    found = distributed.gather_objects(fingerprint)
    if len(set(found)) > 1:
        ranks = ", ".join(f"rank {rank}: {value}" for rank, value in enumerate(found))
        raise DatasetError(f"the dataset differs between ranks ({ranks}): it changed while "
                           "they loaded it (an ingest?); restart the job once it has finished")


def finished_run(store: Store, identity: RunIdentity) -> tuple[str, str] | None:
    """``("published", version)`` or ``("trained", final checkpoint)``: a run that needs no
    more training (and so no peers); None if it does."""
    name, run_id = identity.config.model_name, identity.run_id
    version = published_version_of(store, name, run_id)
    if version is not None:
        return "published", version
    final = ModelKeys(name).checkpoint(run_id, identity.config.epochs)
    return ("trained", final) if store.exists(final) else None


def still_finished(store: Store, identity: RunIdentity) -> tuple[str, str]:
    """finished_run() again, for a Master alone that found the run finished (its peers
    exited): StoreError if it no longer is, since this job cannot train it."""
    finished = finished_run(store, identity)
    if finished is None:
        final = ModelKeys(identity.config.model_name).checkpoint(identity.run_id,
                                                                 identity.config.epochs)
        raise StoreError(f"run {identity.run_id}: its final checkpoint {final} is gone and no "
                         "version of it is published (deleted while this job waited for the "
                         "run's lease?); restart the whole job to train the run again")
    return finished


def run_training(cfg: TrainConfig, store: Store) -> str | None:
    """Train the run of ``cfg`` to the end; rank 0 returns the published version."""
    from trainer.data.loading import load_dataset

    env = distributed.process_env()
    threads = distributed.configure_cpu_threads(env) if env.device.type == "cpu" else None
    bundle = load_dataset(cfg.dataset, store, prefix=cfg.data_location, image_size=cfg.image_size,
                          synthetic_size=cfg.synthetic_size, seed=cfg.seed,
                          loading=cfg.data_loading, footprint=training_footprint(cfg, env))
    identity = RunIdentity(cfg, bundle.fingerprint, model_revision(cfg.model))
    log.info(json.dumps({"event": "start", **identity.to_dict(), "model": cfg.model_name,
                         "rank": env.rank, "world_size": env.world_size,
                         "device": str(env.device), "cpu_threads": threads,
                         "config": cfg.to_dict()}))
    finished = finished_run(store, identity)
    if finished is not None:
        return finish_alone(store, identity, env, bundle, finished)
    # One job trains a run at a time: rank 0 waits here while another job holds the lease.
    with run_lease(store, cfg.model_name, identity.run_id, env.is_main) as lease:
        distributed.join(env)
        # Another job may have finished the run while this one waited for the lease.
        finished = distributed.broadcast_object(finished_run(store, identity)
                                                if env.is_main else None)
        if finished is not None:
            return finish_alone(store, identity, env, bundle, finished, lease)
        return train_and_publish(store, identity, env, bundle, lease)


def train_and_publish(store: Store, identity: RunIdentity, env, bundle,
                      lease: RunLease | None) -> str | None:
    """Every rank, joined: train the remaining epochs, then rank 0 publishes."""
    cfg = identity.config
    check_same_data(bundle.fingerprint, env)
    model, optimizer = build_training(cfg, env, bundle)
    state = resume(store, identity, env, model, optimizer)
    if state is None:  # a fresh run; a resumed one restored these weights too, even one
        state = TrainingState.fresh(identity)  # stopped in its first epoch (epoch 0)
        init_from_training_data(model, bundle, env)
    reporter = reporting.open_reporter(store, identity, is_main=env.is_main,
                                       world_size=env.world_size)
    reporter.started(state)
    train_remaining(store, identity, env, model, optimizer, bundle, state, reporter, lease)
    # No rank may succeed before the run's final checkpoint is durable: the operator never
    # restarts a replica that exited 0, and a restarted Master publishes from that checkpoint.
    distributed.barrier()
    log.info(json.dumps({"event": "trained", "run_id": identity.run_id, "rank": env.rank,
                         "epochs": len(state.history), "weights_sha256": weights_digest(model)}))
    if not env.is_main:
        return None
    if lease is not None:
        lease.check()
    return publish_run(store, TrainingResult(identity, model, bundle, state), reporter)


def train_remaining(store: Store, identity: RunIdentity, env, model, optimizer, bundle,
                    state: TrainingState, reporter, lease: RunLease | None = None) -> None:
    """Every epoch after ``state.epoch``; rank 0 checkpoints each (keeping the newest few)."""
    cfg, keys = identity.config, ModelKeys(identity.config.model_name)
    train_model = model
    if env.world_size > 1:
        device_ids = [env.device.index] if env.device.type == "cuda" else None
        train_model = DistributedDataParallel(model, device_ids=device_ids)
    runner = EpochRunner(cfg, env, train_model, optimizer, bundle)
    runner.on_progress = reporter.progressed
    try:
        # SIGTERM (a deleted pod) stops every rank after one step, checkpointed.
        with stopping.termination_deferred():
            for epoch in range(state.epoch + 1, cfg.epochs + 1):
                # Mid-epoch checkpoints (trainer.run.mid_epoch): where a stopped epoch goes on.
                resume_at = mid_epoch.position_for(state, env.world_size)
                save = mid_epoch.saver(store, identity, state, model, optimizer, env, lease)
                record, confusion = run_epoch(runner, model, epoch, resume_at, save)
                state.position = None
                state.record_epoch(record, confusion, env.world_size)
                if env.is_main:
                    if lease is not None:
                        lease.check()  # taken over by another job: write nothing more
                    state.capture(model, optimizer, env.device)
                    checkpoint.save_checkpoint(store, keys.checkpoint(identity.run_id, epoch),
                                               state)
                    checkpoint.prune_checkpoints(store, cfg.model_name, identity.run_id,
                                                 cfg.keep_checkpoints)
                    reporter.epoch_ended(state)
                if runner.stop_after_epoch:  # SIGTERM in its last step: the epoch is saved
                    raise SystemExit(stopping.TERM_EXIT)
    except BaseException as stopped:
        if stopping.interrupted():  # Ctrl-C: the app shows the run as stopped, not training
            reporter.interrupted(state)
        elif isinstance(stopped, Exception):  # not SIGTERM (SystemExit): a rescale resumes
            reporter.failed(state)  # the app's trainstack_training_failed, the alert's
        raise


def finish_alone(store: Store, identity: RunIdentity, env, bundle,
                 finished: tuple[str, str], lease: RunLease | None = None) -> str | None:
    """A run that needs no more training: rank 0 publishes it (or finishes its publication)
    without any peer; every other rank has nothing to do."""
    kind, where = finished
    log.info(json.dumps({"event": "finished", "run_id": identity.run_id, "rank": env.rank,
                         kind: where}))
    if not env.is_main:
        return None
    # Reported with the world size that trained (this job trains nothing): a re-run with
    # `workers 3` of a run trained by 2 processes still says 2.
    if kind == "published":
        reporter = reporting.open_reporter(store, identity, is_main=True,
                                           world_size=published_world_size(store, identity,
                                                                           where, env))
        version = _done(store, identity, where, finish_publication(
            store, identity.config.model_name, where), reporter)
        log.info("%s", nothing_to_train(store, identity, version))
        return version
    if lease is None:  # two Masters restarted alone must not publish the run twice
        with run_lease(store, identity.config.model_name, identity.run_id, True) as held:
            # Look again: while this job waited for the lease, the one holding it may
            # have published the run and dropped its checkpoints.
            return finish_alone(store, identity, env, bundle, still_finished(store, identity),
                                held)
    model, _ = build_training(identity.config, env, bundle)
    try:
        state = checkpoint.load_fitting(store, where, identity, model)
    except UnusableCheckpoint as e:
        raise StoreError(f"the run's final checkpoint cannot be used ({e}); delete it to train "
                         "the last epoch again") from None
    model.load_state_dict(state.model)
    reporter = reporting.open_reporter(store, identity, is_main=True, world_size=state.world_size)
    return publish_run(store, TrainingResult(identity, model, bundle, state), reporter)


def nothing_to_train(store: Store, identity: RunIdentity, version: str) -> str:
    """What a job that found its run published already tells its user, in words."""
    name = identity.config.model_name
    text = (f"Nothing to train: run {identity.run_id} (this data, model and settings) was "
            f"trained and published before, as version {version} of {name}.")
    latest = latest_version(store, name)
    if latest not in (None, version):
        text += (f" The newest version of {name} is {latest}, from another run: the app "
                 "serves that one.")
    return text + (" To train again, change a setting or the data (make demo: SEED=1, or "
                   "another EPOCHS, LR or BATCH_SIZE).")


def published_world_size(store: Store, identity: RunIdentity, version: str, env) -> int:
    """The world size that trained ``version`` (its metrics.json); this job's if unreadable
    (the reporter then reports nothing anyway)."""
    keys = ModelKeys(identity.config.model_name)
    try:
        return VersionMetrics.from_json(store.get_bytes(
            keys.version_file(version, METRICS_FILE))).world_size
    except (TrainstackError, MetaError):
        return env.world_size


def publish_run(store: Store, result: TrainingResult, reporter) -> str:
    """Rank 0, after the last epoch: publish (once per run), then drop the run's checkpoints."""
    identity = result.identity
    version = published_version_of(store, identity.config.model_name, identity.run_id)
    if version is None:
        version = publish(store, result)
        moved = None
    else:  # published by another job of the same run meanwhile
        moved = finish_publication(store, identity.config.model_name, version)
    return _done(store, identity, version, moved, reporter)


def _done(store: Store, identity: RunIdentity, version: str, moved: bool | None,
          reporter) -> str:
    # A published run resumes from its version, not a checkpoint: none is kept.
    checkpoint.prune_checkpoints(store, identity.config.model_name, identity.run_id, keep=0)
    # After latest.json moved (or not): MLflow's alias follows what latest.json names.
    reporter.published(version)
    log.info(json.dumps({"event": "done", "run_id": identity.run_id, "version": version}))
    return version


def run_epoch(runner: EpochRunner, model: nn.Module, epoch: int, resume_at=None,
              save=None) -> tuple[EpochRecord, list]:
    """Train (from ``resume_at`` if given) + evaluate one epoch and log its structured line."""
    start = time.perf_counter()
    train = runner.train_epoch(epoch, resume=resume_at, save=save)
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
