"""The training state of a run and its self-describing checkpoints.

:class:`TrainingState` is the one owner of everything a run carries from epoch to epoch;
a checkpoint is its ``torch.save`` at ``models/<name>/runs/<run_id>/checkpoints/
epoch-0007.pt`` (the state after epoch 7; epochs count from 1, trainer.contract.layout spells the
key); a mid-epoch one, ``epoch-0006+0000012800.pt``, also holds its position in epoch 7
(``position``: trainer.data.streaming.position), from which the epoch resumes. The store's put
is atomic, so a checkpoint key exists only once its content is complete. A checkpoint whose content is damaged, or that does not fit the run (another
identity or config, other parameter shapes), is skipped in favour of the one before it; a
store that fails while one is read is an outage and is raised, never skipped. A run keeps
its newest ``keep_checkpoints`` checkpoints while it trains and none once it is published.
"""

from __future__ import annotations

import io
import logging
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from trainer.contract.config import RunIdentity, TrainConfig
from trainer.contract.errors import ConfigError, MetaError
from trainer.contract.layout import ModelKeys, checkpoint_epoch, checkpoint_position
from trainer.contract.schema import EpochRecord
from trainer.data.streaming.position import EpochPosition
from trainer.store import Store

log = logging.getLogger(__name__)

# /2: the run's identity (data fingerprint, model revision) instead of a bare run_id.
FORMAT = "trainstack-checkpoint/2"


class UnusableCheckpoint(Exception):
    """A checkpoint that was read but cannot be resumed: damaged, or not this run's."""


@dataclass
class TrainingState:
    """A run after ``epoch`` epochs: what resuming needs, and what publication reads."""

    identity: dict[str, str]
    """RunIdentity.to_dict(): run_id, data_fingerprint, model_revision."""
    config: dict[str, Any]
    """The TrainConfig as a dict."""
    epoch: int = 0
    history: list[EpochRecord] = field(default_factory=list)
    confusion: list[list[int]] = field(default_factory=list)
    """Test-split confusion matrix of the last epoch (rows = true class)."""
    world_size: int = 1
    model: dict[str, torch.Tensor] = field(default_factory=dict)
    optimizer: dict[str, Any] = field(default_factory=dict)
    rng: dict[str, Any] = field(default_factory=dict)
    """This rank's global generators (rank 0's, in a checkpoint; every rank restores them).
    Enough to resume bit-identically because training draws from them on no rank: each
    step's augmentation has its own generator, seeded from the plan and the step."""
    mlflow_run_id: str | None = None
    """The run's MLflow run once MLflow answered (trainer.tracking.tracker): a resumed run goes on
    logging into it. Optional: older checkpoints lack it."""
    position: dict[str, Any] | None = None
    """A mid-epoch checkpoint's place in epoch ``epoch + 1`` (trainer.data.streaming.position.
    EpochPosition.to_dict()); None at an epoch's end. Optional: older checkpoints lack it."""

    @classmethod
    def fresh(cls, identity: RunIdentity) -> TrainingState:
        return cls(identity=identity.to_dict(), config=identity.config.to_dict())

    @property
    def run_id(self) -> str:
        return self.identity["run_id"]

    def record_epoch(self, record: EpochRecord, confusion: list[list[int]],
                     world_size: int) -> None:
        """Every rank: the epoch just trained and evaluated."""
        if record.epoch != self.epoch + 1:
            raise ValueError(f"epoch {record.epoch} recorded after epoch {self.epoch}")
        self.epoch, self.confusion, self.world_size = record.epoch, confusion, world_size
        self.history.append(record)

    def capture(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                device: torch.device | None = None) -> None:
        """Take the weights, optimizer and RNG states to checkpoint (no copies: saved at once)."""
        self.model, self.optimizer = model.state_dict(), optimizer.state_dict()
        self.rng = rng_state(device)

    def restore(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                device: torch.device | None = None) -> None:
        model.load_state_dict(self.model)
        optimizer.load_state_dict(self.optimizer)
        set_rng_state(self.rng, device)

    def to_checkpoint(self) -> dict[str, Any]:
        """Plain containers and tensors only: loadable with ``weights_only=True``."""
        # No scheduler state: the LR is lr_at(cfg, progress), computed from the epoch,
        # so resuming at any world size needs nothing more.
        return {"format": FORMAT, "epoch": self.epoch, "identity": self.identity,
                "config": self.config, "model": self.model, "optimizer": self.optimizer,
                "rng": self.rng, "history": [e.to_dict() for e in self.history],
                "confusion": self.confusion, "world_size": self.world_size,
                "mlflow_run_id": self.mlflow_run_id, "position": self.position}

    @classmethod
    def from_checkpoint(cls, raw: Any, where: str) -> TrainingState:
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            found = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
            raise UnusableCheckpoint(f"{where} is not a {FORMAT} checkpoint ({found!r})")
        try:
            if not all(isinstance(raw[k], dict) for k in ("identity", "config", "model",
                                                          "optimizer", "rng")):
                raise TypeError("identity, config, model, optimizer and rng must be dicts")
            history = [EpochRecord.from_dict(e) for e in raw["history"]]
            return cls(identity=dict(raw["identity"]), config=raw["config"], epoch=raw["epoch"],
                       history=history, confusion=raw["confusion"],
                       world_size=raw["world_size"], model=raw["model"],
                       optimizer=raw["optimizer"], rng=raw["rng"],
                       mlflow_run_id=_optional_id(raw.get("mlflow_run_id")),
                       position=_optional_position(raw.get("position")))
        except (KeyError, TypeError, ValueError, MetaError) as e:
            raise UnusableCheckpoint(f"{where}: incomplete {FORMAT} checkpoint ({e})") from None

    def check_fits(self, identity: RunIdentity, model: torch.nn.Module, where: str) -> None:
        """UnusableCheckpoint unless this state is ``identity``'s and fits ``model``."""
        if self.identity != identity.to_dict():
            raise UnusableCheckpoint(f"{where} does not fit: it belongs to run "
                                     f"{self.identity}, not {identity.to_dict()}")
        try:
            saved_config = TrainConfig.from_dict(self.config).defining_fields()
        except (ConfigError, TypeError) as e:
            raise UnusableCheckpoint(f"{where} does not fit: its config is invalid ({e})") from None
        if saved_config != identity.config.defining_fields():
            raise UnusableCheckpoint(f"{where} does not fit: it was trained with config "
                                     f"{saved_config}")
        if not (0 if self.position else 1) <= self.epoch <= identity.config.epochs:
            raise UnusableCheckpoint(f"{where} does not fit: epoch {self.epoch} of "
                                     f"{identity.config.epochs}")
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        saved = {k: tuple(v.shape) for k, v in self.model.items() if isinstance(v, torch.Tensor)}
        if saved != expected or len(saved) != len(self.model):
            differ = sorted(k for k in expected.keys() | saved.keys()
                            if expected.get(k) != saved.get(k))
            raise UnusableCheckpoint(f"{where} does not fit the model: parameters "
                                     f"{differ[:5]} differ")


def _optional_position(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        EpochPosition.from_dict(value)
    except (KeyError, TypeError, ValueError) as e:
        raise TypeError(f"position: {e!r}") from None
    return value


def _optional_id(value: Any) -> str | None:
    """A checkpoint's MLflow run id; anything but a non-empty string counts as none."""
    return value if isinstance(value, str) and value else None


def _cuda_device(device: torch.device | None) -> torch.device | None:
    """The CUDA device whose generator a checkpoint holds; None when CUDA is not in use."""
    if not torch.cuda.is_available():
        return None
    if device is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device if device.type == "cuda" else None


def rng_state(device: torch.device | None = None) -> dict[str, Any]:
    """Every generator's state; for CUDA only ``device``'s (this rank's) generator.

    Saving all visible GPUs' states would tie the checkpoint to the GPU count per pod,
    and restoring it after a rescale to fewer GPUs would fail.
    """
    np_state = np.random.get_state()
    cuda = _cuda_device(device)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(cuda) if cuda is not None else None,
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }


def set_rng_state(state: dict[str, Any], device: torch.device | None = None) -> None:
    torch.set_rng_state(state["torch"])
    _set_cuda_rng_state(state.get("cuda"), device)
    random.setstate(_as_tuple(state["python"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))


def _set_cuda_rng_state(saved: Any, device: torch.device | None) -> None:
    """Restore ``device``'s CUDA generator; skip it when there is nothing that fits."""
    cuda = _cuda_device(device)
    if cuda is None or saved is None or (isinstance(saved, (list, tuple)) and not saved):
        return  # CPU run, or the checkpoint was written without CUDA
    if isinstance(saved, (list, tuple)):
        # Old format: one state per visible GPU. This rank's generator is its own device's.
        index = cuda.index if cuda.index is not None else torch.cuda.current_device()
        if index >= len(saved):
            log.info("checkpoint holds CUDA RNG states for %d GPU(s), none for cuda:%d: "
                     "keeping its fresh state", len(saved), index)
            return
        saved = saved[index]
    torch.cuda.set_rng_state(saved, cuda)


def _as_tuple(value):
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def save_checkpoint(store: Store, key: str, state: TrainingState) -> None:
    """Serialize in memory, then one atomic put: readers never see half a checkpoint."""
    buffer = io.BytesIO()
    torch.save(state.to_checkpoint(), buffer)
    store.put_bytes(key, buffer.getvalue())
    log.info("checkpoint written: %s (%.1f MB)", key, buffer.tell() / 1e6)


def load_checkpoint(store: Store, key: str) -> TrainingState:
    """The state in ``key``. A StoreError (the store failed) propagates; content that does
    not load is UnusableCheckpoint."""
    data = store.get_bytes(key)
    try:
        raw = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 (torch.load raises many types for a damaged file)
        raise UnusableCheckpoint(f"{key} cannot be loaded: {type(e).__name__}: {e}") from None
    return TrainingState.from_checkpoint(raw, key)


def all_checkpoints(store: Store, model_name: str, run_id: str
                    ) -> list[tuple[tuple[int, int], str]]:
    """((epochs done, samples of the next epoch), key) of every checkpoint of the run,
    mid-epoch ones included, newest first."""
    found = []
    for key in store.list(ModelKeys(model_name).checkpoints(run_id)):
        position = checkpoint_position(key)
        if position is not None:
            found.append((position, key))
    return sorted(found, reverse=True)


def checkpoint_epochs(store: Store, model_name: str, run_id: str) -> list[tuple[int, str]]:
    """(epoch, key) of every end-of-epoch checkpoint of the run, newest first."""
    found = []
    for key in store.list(ModelKeys(model_name).checkpoints(run_id)):
        epoch = checkpoint_epoch(key)
        if epoch is not None:
            found.append((epoch, key))
    return sorted(found, reverse=True)


def load_fitting(store: Store, key: str, identity: RunIdentity,
                 model: torch.nn.Module) -> TrainingState:
    """``key``'s state, checked against the run and the model just built."""
    state = load_checkpoint(store, key)
    state.check_fits(identity, model, key)
    return state


def newest_resumable(store: Store, identity: RunIdentity,
                     model: torch.nn.Module) -> tuple[str, TrainingState] | None:
    """The newest checkpoint of the run that loads and fits ``model``; others are reported
    and skipped. Store failures are raised: an outage must not silently cost epochs."""
    for _, key in all_checkpoints(store, identity.config.model_name, identity.run_id):
        try:
            return key, load_fitting(store, key, identity, model)
        except UnusableCheckpoint as e:
            log.warning("skipping checkpoint: %s", e)
    return None


def prune_checkpoints(store: Store, model_name: str, run_id: str, keep: int) -> list[str]:
    """Delete all but the newest ``keep`` checkpoints of the run; return the deleted keys."""
    deleted = [key for _, key in all_checkpoints(store, model_name, run_id)[keep:]]
    for key in deleted:
        store.delete(key)
    if deleted:
        log.info("deleted %d checkpoint(s) of run %s, keeping the newest %d", len(deleted),
                 run_id, keep)
    return deleted
