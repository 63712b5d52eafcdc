"""How much data a training process may hold: its memory limit less what training takes.

A training run gives the loader its footprint (trainer.limits.footprint: the measured
figures of its model, image size and batch size). The loader then holds a dataset in
memory only if the run still fits with it, streams it if only that fits, and otherwise
stops before anything is decoded or trained, with one line naming the memory the run
needs and the stack key to raise (memoryPerWorker). A caller that does not train (the
app's traffic, benchmarks) gives no footprint: its data may take DATASET_MEMORY_SHARE of
the limit, as before.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from dataclasses import dataclass

from trainer.contract.config import TrainConfig
from trainer.contract.errors import ConfigError
from trainer.limits.footprint import MARGIN, MARGIN_BYTES, Footprint, shortfall
from trainer.limits.memlimit import (
    local_processes,
    peak_rss_bytes,
    process_memory_bytes,
    report_peak_at_exit,
)

log = logging.getLogger(__name__)

# Without a footprint (a caller that does not train), decoded images may take this share of
# the memory limit.
DATASET_MEMORY_SHARE = 0.25
MEMORY_KEY = "memoryPerWorker"


def training_footprint(cfg: TrainConfig, env) -> Footprint:
    """What a process of the run ``cfg`` holds but its data, planned now, before it loads
    any: what it holds already (its imports) is read, not assumed. ``env``: its
    trainer.run.distributed.DistEnv."""
    return Footprint.of_run(cfg, world_size=env.world_size, is_main=env.is_main,
                            accelerator=env.device.type != "cpu", runtime=peak_rss_bytes())


@dataclass(frozen=True)
class DataBudget:
    """The data a process may hold next to ``footprint``: :attr:`allowance` bytes."""

    footprint: Footprint | None
    allowance_override: int | None = None
    """A caller's own allowance (``max_decoded_bytes``), whatever the limit."""

    @functools.cached_property
    def available(self) -> int:
        """This process's share of the pod's memory limit, read when first asked (a loader
        that never needs it never reads the cgroup)."""
        return process_memory_bytes()

    @property
    def allowance(self) -> int:
        """Bytes of data that fit next to training (never negative)."""
        if self.allowance_override is not None:
            return self.allowance_override
        if self.footprint is None:
            return int(self.available * DATASET_MEMORY_SHARE)
        usable = math.floor((self.available - MARGIN_BYTES) / (1 + MARGIN))
        return max(0, usable - self.footprint.training_bytes())

    def fits(self, data_bytes: int) -> bool:
        return data_bytes <= self.allowance

    def require(self, data_bytes: int, holding: str) -> None:
        """Stop, in one line, unless training fits with ``data_bytes`` of data (``holding``:
        what that data is, for the message). Only with a footprint: without one, the
        caller's own check applies."""
        if self.footprint is None or self.fits(data_bytes):
            return
        raise ConfigError(shortfall(self.footprint, self.footprint.need(data_bytes),
                                    self.available, holding, local_processes()),
                          key=MEMORY_KEY)

    def planned(self, loading: str, data_bytes: int) -> None:
        """Log the plan, and at exit the peak the process reached against it."""
        if self.footprint is None:
            return
        plan = {"loading": loading, "data_bytes": data_bytes,
                "runtime_bytes": self.footprint.runtime,
                "planned_bytes": self.footprint.need(data_bytes),
                "available_bytes": self.available, "model": self.footprint.model,
                "image_size": self.footprint.image_size,
                "batch_size": self.footprint.batch_size}
        log.info(json.dumps({"event": "memory_plan", **plan}))
        report_peak_at_exit(**plan)

