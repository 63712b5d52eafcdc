"""Mid-epoch checkpoints: what train.py's epoch loop needs to write and resume them."""

from __future__ import annotations

import logging
from collections.abc import Callable

from trainer.contract.config import RunIdentity
from trainer.contract.layout import ModelKeys
from trainer.data.streaming.position import EpochPosition
from trainer.state import checkpoint
from trainer.state.checkpoint import TrainingState
from trainer.store import Store

log = logging.getLogger(__name__)


def position_for(state: TrainingState, world: int) -> EpochPosition | None:
    """Where the next epoch starts: a mid-epoch checkpoint's position for ``world`` ranks
    (EpochPosition.for_world); None from the epoch's start."""
    if not state.position:
        return None
    return EpochPosition.from_dict(state.position).for_world(world)


def resumed(state: TrainingState) -> dict:
    """What the resume event says of a mid-epoch position."""
    if not state.position:
        return {}
    position = EpochPosition.from_dict(state.position)
    return {"samples_trained": position.trained, "of_samples": position.plan.total}


def saver(store: Store, identity: RunIdentity, state: TrainingState, model, optimizer,
          env, lease=None) -> Callable[[EpochPosition], str] | None:
    """Rank 0's way to checkpoint ``state`` at a position in its next epoch, returning
    the checkpoint's key (None on the other ranks: only rank 0 writes). With ``lease`` (trainer.store.lease.RunLease), a job whose
    lease another job took over writes nothing."""
    if not env.is_main:
        return None
    keys, cfg = ModelKeys(identity.config.model_name), identity.config

    def save(position: EpochPosition) -> str:
        if lease is not None:
            lease.check()
        state.position, state.world_size = position.to_dict(), env.world_size
        state.capture(model, optimizer, env.device)
        key = keys.mid_epoch_checkpoint(identity.run_id, state.epoch, position.trained)
        checkpoint.save_checkpoint(store, key, state)
        checkpoint.prune_checkpoints(store, cfg.model_name, identity.run_id, cfg.keep_checkpoints)
        return key

    return save
