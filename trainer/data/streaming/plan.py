"""Which samples each rank trains in an epoch, in which order, and how a stopped epoch's
rest is dealt out again, to any world size.

A dataset is a list of shards (an in-memory dataset without shards is one). Epoch ``e``
visits the shards in a permutation fixed by (seed, e), and each shard's samples in a
permutation fixed by (seed, e, shard): together one sequence of every training sample,
which is cut into ``world`` contiguous shares of sizes that differ by at most one. A rank's
share is thus a run of whole shards (the two at its ends may be shared with a neighbour),
disjoint from every other rank's, without any communication.

Every rank runs the same number of steps (DDP steps together): ``ceil(largest share /
batch_size)``, each share cut into that many batches whose sizes differ by at most one. No
sample is repeated or dropped. After ``k`` steps a plan knows exactly what every rank has
trained, so the rest of the epoch, the remaining segments of every share in rank order, is
a new sequence to cut for the next world size: resuming after a rescale trains each
remaining sample once and nothing twice. Resuming with the world size the plan was dealt
to goes on with that very plan (EpochPosition.for_world), step by step.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from trainer.contract.errors import DatasetError

Segment = tuple[int, int, int]
"""``(shard, begin, end)``: positions ``begin .. end - 1`` of the shard's epoch permutation."""


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


def shard_permutation(size: int, *, seed: int, epoch: int, shard: int) -> torch.Tensor:
    """The order epoch ``epoch`` visits the samples of shard ``shard`` in."""
    generator = torch.Generator().manual_seed(epoch_seed(seed, epoch) * 65_537 + shard)
    return torch.randperm(size, generator=generator)


def cut(segments: list[Segment], world: int) -> list[list[Segment]]:
    """``segments`` as ``world`` contiguous shares whose sample counts differ by at most one."""
    total = sum(end - begin for _, begin, end in segments)
    bounds = [total * rank // world for rank in range(world + 1)]
    shares: list[list[Segment]] = [[] for _ in range(world)]
    position = 0
    for shard, begin, end in segments:
        for rank in range(world):
            lo, hi = max(bounds[rank], position), min(bounds[rank + 1], position + end - begin)
            if lo < hi:
                shares[rank].append((shard, begin + lo - position, begin + hi - position))
        position += end - begin
    return shares


def skip(share: list[Segment], count: int) -> list[Segment]:
    """``share`` without its first ``count`` samples."""
    rest = []
    for shard, begin, end in share:
        taken = min(count, end - begin)
        count -= taken
        if begin + taken < end:
            rest.append((shard, begin + taken, end))
    return rest


@dataclass
class EpochPlan:
    """The rest of epoch ``epoch`` from ``done`` samples on: each rank's share of it."""

    epoch: int
    shares: list[list[Segment]]
    batch_size: int
    done: int = 0
    """Samples of this epoch trained before this plan (by an earlier world size)."""
    total: int = 0
    """Samples in the whole epoch."""

    @classmethod
    def fresh(cls, shard_sizes: list[int], *, seed: int, epoch: int, world: int,
              batch_size: int) -> EpochPlan:
        generator = torch.Generator().manual_seed(epoch_seed(seed, epoch))
        order = torch.randperm(len(shard_sizes), generator=generator).tolist()
        segments = [(shard, 0, shard_sizes[shard]) for shard in order if shard_sizes[shard]]
        return cls.of(segments, epoch=epoch, world=world, batch_size=batch_size, done=0,
                      total=sum(shard_sizes))

    @classmethod
    def of(cls, segments: list[Segment], *, epoch: int, world: int, batch_size: int,
           done: int, total: int) -> EpochPlan:
        left = sum(end - begin for _, begin, end in segments)
        if left < world:
            raise DatasetError(f"epoch {epoch} has {left} training samples left for {world} "
                               "ranks: every rank needs at least one; use fewer workers")
        return cls(epoch, cut(segments, world), batch_size, done, total)

    @functools.cached_property
    def counts(self) -> list[int]:
        """Samples in each rank's share."""
        return [sum(end - begin for _, begin, end in share) for share in self.shares]

    def count(self, rank: int) -> int:
        return self.counts[rank]

    @property
    def steps(self) -> int:
        return math.ceil(max(self.counts) / self.batch_size)

    def batch_sizes(self, rank: int) -> list[int]:
        count, steps = self.count(rank), self.steps
        return [count // steps + (1 if step < count % steps else 0) for step in range(steps)]

    def consumed(self, rank: int, step: int) -> int:
        """Samples rank ``rank`` trained in this plan's first ``step`` steps (in O(1): the
        loop asks every step)."""
        count, steps = self.count(rank), self.steps
        return step * (count // steps) + min(step, count % steps)

    def trained(self, step: int) -> int:
        """Samples of the epoch trained, over every rank, once this plan's ``step`` steps ran."""
        return self.done + sum(self.consumed(rank, step) for rank in range(len(self.shares)))

    def rest(self, step: int, world: int) -> EpochPlan:
        """The epoch after this plan's first ``step`` steps, dealt to ``world`` ranks."""
        segments = [segment for rank, share in enumerate(self.shares)
                    for segment in skip(share, self.consumed(rank, step))]
        return EpochPlan.of(segments, epoch=self.epoch, world=world,
                            batch_size=self.batch_size, done=self.trained(step), total=self.total)

    def batches(self, rank: int, start: int = 0) -> Iterator[list[Segment]]:
        """Rank ``rank``'s batches from step ``start`` on, each as the segments it is cut from."""
        sizes = self.batch_sizes(rank)
        share = skip(self.shares[rank], self.consumed(rank, start))
        for size in sizes[start:]:
            batch: list[Segment] = []
            while size:
                shard, begin, end = share[0]
                taken = min(size, end - begin)
                batch.append((shard, begin, begin + taken))
                size -= taken
                share = share[1:] if begin + taken == end else [(shard, begin + taken, end),
                                                                *share[1:]]
            yield batch

    def step_seed(self, seed: int, rank: int, step: int) -> int:
        """The seed of rank ``rank``'s random draws (augmentation) in step ``step`` (1-based)
        of this plan: a function of the run's seed, the plan and the step alone, so a plan
        that goes on after a stop draws what it would have drawn without stopping, and a
        rest dealt afresh (another ``done`` or world size) draws new numbers."""
        key = f"{seed}/{self.epoch}/{self.done}/{len(self.shares)}/{rank}/{step}".encode()
        return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")

    def to_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "shares": [[list(s) for s in share] for share in self.shares],
                "batch_size": self.batch_size, "done": self.done, "total": self.total}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> EpochPlan:
        shares = [[(int(a), int(b), int(c)) for a, b, c in share] for share in raw["shares"]]
        return cls(int(raw["epoch"]), shares, int(raw["batch_size"]), int(raw["done"]),
                   int(raw["total"]))
