"""Self-describing checkpoints of the full training state, and resuming from them.

Key layout: ``models/<model>-<dataset>/runs/<run_id>/checkpoints/epoch-0007.pt`` holds the
state after epoch 7 (epochs count from 1). The store's put is atomic, so a checkpoint
key exists only once its content is complete; a checkpoint that still fails to load is
skipped in favour of the one before it.
"""

from __future__ import annotations

import io
import logging
import random
import re
from typing import Any

import numpy as np
import torch

from trainer.storage import Store, StoreError

log = logging.getLogger(__name__)

FORMAT = "trainstack-checkpoint/1"
_NAME = re.compile(r"epoch-(\d{4,})\.pt$")


def checkpoint_prefix(model_name: str, run_id: str) -> str:
    return f"models/{model_name}/runs/{run_id}/checkpoints/"


def checkpoint_key(model_name: str, run_id: str, epoch: int) -> str:
    return f"{checkpoint_prefix(model_name, run_id)}epoch-{epoch:04d}.pt"


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


def save_checkpoint(store: Store, key: str, state: dict[str, Any]) -> None:
    """Serialize in memory, then one atomic put: readers never see half a checkpoint."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buffer)
    store.put_bytes(key, buffer.getvalue())
    log.info("checkpoint written: %s (%.1f MB)", key, buffer.tell() / 1e6)


def load_checkpoint(store: Store, key: str) -> dict[str, Any]:
    data = store.get_bytes(key)
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise StoreError(f"{key} is not a {FORMAT} checkpoint")
    return state


def checkpoint_epochs(store: Store, model_name: str, run_id: str) -> list[tuple[int, str]]:
    """(epoch, key) of every checkpoint of the run, newest first."""
    found = []
    for key in store.list(checkpoint_prefix(model_name, run_id)):
        match = _NAME.search(key)
        if match:
            found.append((int(match.group(1)), key))
    return sorted(found, reverse=True)


def newest_loadable(store: Store, model_name: str, run_id: str) -> tuple[str, dict] | None:
    """The newest checkpoint that loads; unreadable ones are reported and skipped."""
    for epoch, key in checkpoint_epochs(store, model_name, run_id):
        try:
            return key, load_checkpoint(store, key)
        except Exception as e:  # noqa: BLE001 (a damaged file must not block an older one)
            log.warning("skipping checkpoint %s: %s", key, e)
    return None
