"""Where an epoch stopped, as a checkpoint holds it, and the audit trail of samples trained."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from trainer.data.streaming.plan import EpochPlan

# A folder each rank appends the ids of every sample it trains to (one line per step): an
# audit of what a run trained, that the mid-epoch resume test counts.
SAMPLE_TRACE_ENV = "TRAINSTACK_SAMPLE_TRACE"



@dataclass
class EpochPosition:
    """Where an epoch stopped: ``step`` steps of ``plan`` trained, and the metric totals
    (loss sum, correct, count over every rank) and seconds of the whole epoch so far."""

    plan: EpochPlan
    step: int
    totals: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    seconds: float = 0.0

    def for_world(self, world: int) -> EpochPosition:
        """The same position for ``world`` ranks: as it is when its plan was dealt to
        ``world`` ranks (the same plan goes on, step by step, as if never stopped), else
        the rest of the epoch dealt to ``world`` ranks afresh."""
        if len(self.plan.shares) == world:
            return self
        return EpochPosition(self.plan.rest(self.step, world), 0, self.totals, self.seconds)

    @property
    def trained(self) -> int:
        return self.plan.trained(self.step)

    def to_dict(self) -> dict:
        return {"plan": self.plan.to_dict(), "step": self.step, "totals": self.totals,
                "seconds": self.seconds}

    @classmethod
    def from_dict(cls, raw: dict) -> EpochPosition:
        return cls(EpochPlan.from_dict(raw["plan"]), int(raw["step"]),
                   [float(v) for v in raw["totals"]], float(raw["seconds"]))


class SampleTrace:
    """Appends ``<epoch> <done> <step> <id> <id> ...`` per step to ``$TRAINSTACK_SAMPLE_TRACE/
    rank-<rank>.<pid>.txt`` when that variable is set (``done``: samples of the epoch trained
    before this plan); nothing otherwise."""

    def __init__(self, path: Path | None, prefix: str):
        self.file = path.open("a") if path else None
        self.prefix = prefix

    @classmethod
    def open(cls, rank: int, epoch: int, done: int) -> SampleTrace:
        folder = os.environ.get(SAMPLE_TRACE_ENV)
        path = Path(folder) / f"rank-{rank}.{os.getpid()}.txt" if folder else None
        return cls(path, f"{epoch} {done}")

    def write(self, step: int, ids: torch.Tensor) -> None:
        if self.file is not None:
            self.file.write(f"{self.prefix} {step} {' '.join(map(str, ids.tolist()))}\n")
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
