"""The training loop's batches of an epoch plan, from memory or streamed from shards.

Both yield ``(pixels, index, labels, ids)``: uint8 images to augment, the rows of ``pixels``
in the batch, their labels, and each sample's id (its row in the dataset's shards taken in
index order), the same for the same plan either way.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from trainer.data.streaming.plan import EpochPlan, Segment, cut, shard_permutation
from trainer.data.streaming.source import ShardedDataset

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def _offsets(sizes: list[int]) -> list[int]:
    return [0, *np.cumsum(sizes).tolist()][:len(sizes)]


class MemoryBatches:
    """A dataset held in memory (a DatasetBundle), on the training device."""

    def __init__(self, bundle, device: torch.device):
        self.device = device
        self.images, self.labels = bundle.train.images.to(device), bundle.train.labels.to(device)
        self.test_images = bundle.test.images.to(device)
        self.test_labels = bundle.test.labels.to(device)
        self.shard_sizes = list(bundle.shard_sizes or [len(bundle.train.labels)])
        self.offsets = _offsets(self.shard_sizes)

    def train(self, plan: EpochPlan, rank: int, start: int, seed: int) -> Iterator[Batch]:
        orders: dict[int, torch.Tensor] = {}
        for batch in plan.batches(rank, start):
            parts = []
            for shard, begin, end in batch:
                if shard not in orders:
                    orders[shard] = self.offsets[shard] + shard_permutation(
                        self.shard_sizes[shard], seed=seed, epoch=plan.epoch, shard=shard)
                parts.append(orders[shard][begin:end])
            ids = torch.cat(parts)
            index = ids.to(self.device)
            yield self.images, index, self.labels[index], ids

    def test(self, rank: int, world: int, batch_size: int) -> Iterator[tuple[torch.Tensor, ...]]:
        shard = torch.arange(rank, len(self.test_labels), world, device=self.device)
        for index in shard.split(batch_size):
            yield self.test_images[index], self.test_labels[index]


class StreamBatches:
    """A sharded dataset read shard by shard through the read-ahead cache: at most one
    shard in memory at a time (trainer.data.streaming.source.ShardedDataset.streaming_bytes)."""

    def __init__(self, sharded: ShardedDataset, device: torch.device):
        self.sharded, self.device = sharded, device
        self.shard_sizes = sharded.shard_sizes("train")
        self.offsets = _offsets(self.shard_sizes)

    def _pieces(self, split: str, segments: list[Segment], order) -> Iterator[tuple]:
        """``(pixels, labels, ids)`` of every segment, in order, shard by shard."""
        numbers = list(dict.fromkeys(shard for shard, _, _ in segments))
        cache = self.sharded.cache(split, numbers)
        try:
            loaded, position = None, -1
            for shard, begin, end in segments:
                if loaded is None or loaded[0] != shard:
                    position += 1
                    # The shard before goes first: never two in memory at once.
                    loaded = images = labels = None
                    images, labels = self.sharded.read(cache, position, split, shard)
                    loaded = (shard, torch.from_numpy(images), torch.from_numpy(labels),
                              order(shard))
                _, images, labels, rows = loaded
                picked = rows[begin:end]
                yield images[picked], labels[picked], picked
        finally:
            cache.close()

    def train(self, plan: EpochPlan, rank: int, start: int, seed: int) -> Iterator[Batch]:
        batches = list(plan.batches(rank, start))
        segments = [segment for batch in batches for segment in batch]

        def order(shard: int) -> torch.Tensor:
            return shard_permutation(self.shard_sizes[shard], seed=seed, epoch=plan.epoch,
                                     shard=shard)

        pieces = self._pieces("train", segments, order)
        try:
            for batch in batches:
                parts = [next(pieces) for _ in batch]
                images = torch.cat([p[0] for p in parts]).to(self.device)
                labels = torch.cat([p[1] for p in parts]).to(self.device)
                ids = torch.cat([self.offsets[shard] + p[2]
                                 for (shard, _, _), p in zip(batch, parts)])
                yield images, torch.arange(len(labels), device=self.device), labels, ids
        finally:
            pieces.close()

    def test(self, rank: int, world: int, batch_size: int) -> Iterator[tuple[torch.Tensor, ...]]:
        sizes = self.sharded.shard_sizes("test")
        share = cut([(n, 0, size) for n, size in enumerate(sizes)], world)[rank]
        pending: list[tuple[torch.Tensor, torch.Tensor]] = []
        for images, labels, _ in self._pieces("test", share, lambda n: torch.arange(sizes[n])):
            for start in range(0, len(labels), batch_size):
                pending.append((images[start:start + batch_size], labels[start:start + batch_size]))
                while sum(len(p[1]) for p in pending) >= batch_size:
                    yield self._joined(pending, batch_size)
        while pending:
            yield self._joined(pending, batch_size)

    def _joined(self, pending: list, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``batch_size`` pending images (all, if fewer), taken off ``pending``."""
        images = torch.cat([p[0] for p in pending])
        labels = torch.cat([p[1] for p in pending])
        pending.clear()
        if len(labels) > batch_size:
            pending.append((images[batch_size:], labels[batch_size:]))
        return images[:batch_size].to(self.device), labels[:batch_size].to(self.device)
