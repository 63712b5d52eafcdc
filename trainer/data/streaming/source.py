"""A sharded dataset in the store: opened and checked, then held in memory or streamed.

Both ways give the same bundle fingerprint and train on the same samples in the same order
(trainer.data.streaming.plan over the index's shards), so whether a run streams is operational,
like its world size: it is chosen from the decoded size against the memory limit unless
TrainConfig.data_loading forces it.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import numpy as np
import torch

from trainer.contract.errors import DatasetError, ObjectNotFound
from trainer.contract.layout import manifest_key
from trainer.data import pixels
from trainer.data.dataset import DatasetBundle, Split
from trainer.data.streaming.cache import ShardCache, cache_budget
from trainer.data.streaming.format import (
    INDEX_NAME,
    SHARDS_FOLDER,
    SPLITS,
    ShardIndex,
    index_key,
    is_shard_key,
    read_shard,
    shards_prefix,
)
from trainer.store import Store

log = logging.getLogger(__name__)

# Training images a streamed bundle keeps in memory for a model's data-dependent
# initialisation, and test images for the published examples: from the first shard only.
SAMPLE_IMAGES = 1024


def manifest_fingerprint(store: Store, prefix: str) -> str | None:
    """trainer.data.imagefolder's fingerprint of the files under ``prefix``, hashed as it streams
    (the manifest of a large folder need not be held in memory); None without a manifest."""
    digest = hashlib.sha256()
    try:
        with store.open_read(manifest_key(prefix)) as stream:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
    except ObjectNotFound:
        return None
    return f"sha256:{digest.hexdigest()}+pixels@{pixels.REVISION}"


@dataclass
class ShardedDataset:
    store: Store
    prefix: str
    index: ShardIndex

    def shard_sizes(self, split: str = "train") -> list[int]:
        return [s.count for s in self.index.shards[split]]

    def cache(self, split: str, numbers: list[int]) -> ShardCache:
        """A read-ahead of ``split``'s shards ``numbers``, in that order."""
        folder, budget = cache_budget()
        return ShardCache(self.store, [self.index.shards[split][n] for n in numbers], folder,
                          budget)

    def read(self, cache: ShardCache, position: int, split: str,
             number: int) -> tuple[np.ndarray, np.ndarray]:
        """Shard ``number`` of ``split``, the ``position``-th of ``cache``, into memory."""
        path = cache.take(position)
        try:
            return read_shard(path, self.index.shards[split][number], self.index)
        finally:
            cache.release(position)

    def in_memory(self) -> DatasetBundle:
        """Every shard decoded into one array per split (shards in index order)."""
        index, splits = self.index, {}
        for split in SPLITS:
            count, size = index.count(split), index.image_size
            images = np.empty((count, index.channels, size, size), dtype=np.uint8)
            labels = np.empty(count, dtype=np.int64)
            shards = self.index.shards[split]
            cache, row = self.cache(split, list(range(len(shards)))), 0
            try:
                for number, shard in enumerate(shards):
                    images[row:row + shard.count], labels[row:row + shard.count] = self.read(
                        cache, number, split, number)
                    row += shard.count
            finally:
                cache.close()
            splits[split] = Split(torch.from_numpy(images), torch.from_numpy(labels))
        return DatasetBundle("imagefolder", splits["train"], splits["test"], index.classes,
                             tuple(index.mean), tuple(index.std), index.fingerprint,
                             shard_sizes=self.shard_sizes())

    def streamed(self) -> StreamedBundle:
        samples = {}
        for split in SPLITS:
            cache = self.cache(split, [0])
            try:
                images, labels = self.read(cache, 0, split, 0)
            finally:
                cache.close()
            samples[split] = Split(torch.from_numpy(images[:SAMPLE_IMAGES].copy()),
                                   torch.from_numpy(labels[:SAMPLE_IMAGES].copy()))
        index = self.index
        return StreamedBundle("imagefolder", samples["train"], samples["test"], index.classes,
                              tuple(index.mean), tuple(index.std), index.fingerprint, self)


@dataclass
class StreamedBundle:
    """A dataset trained from its shards as they stream: ``train`` and ``test`` are samples
    of it (a data-dependent initialisation, the published examples), ``sharded`` all of it."""

    name: str
    train: Split
    test: Split
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    fingerprint: str
    sharded: ShardedDataset


def shard_image_sizes(store: Store, prefix: str) -> list[int]:
    """The image sizes an ingest wrote ``prefix``'s shards at (those with an index)."""
    sizes = set()
    for key in store.list(f"{prefix}/{SHARDS_FOLDER}/"):
        size, _, name = key[len(prefix) + len(SHARDS_FOLDER) + 2:].partition("/")
        if name == INDEX_NAME and size.endswith("px") and size[:-2].isdigit():
            sizes.add(int(size[:-2]))
    return sorted(sizes)


def open_sharded(store: Store, prefix: str, image_size: int) -> ShardedDataset | None:
    """``prefix``'s shards at ``image_size`` pixels, checked against the files' manifest and
    the store's listing; None when no ingest wrote any."""
    where = index_key(prefix, image_size)
    try:
        index = ShardIndex.from_json(store.get_bytes(where), where)
    except ObjectNotFound:
        return None
    if index.image_size != image_size:
        raise DatasetError(f"{where}: holds {index.image_size}px images, not {image_size}px; "
                           "re-run the ingest")
    current = manifest_fingerprint(store, prefix)
    if current != index.source_fingerprint:
        raise DatasetError(f"{where}: is from another dataset version ({index.source_fingerprint})"
                           f" than the files under {prefix} ({current}); an ingest is in "
                           "progress or was interrupted: re-run the ingest")
    listed = {s.key for split in SPLITS for s in index.shards[split]}
    for key in store.list(shards_prefix(prefix, image_size)):
        if is_shard_key(key) and key not in listed:
            raise DatasetError(f"{key}: a shard missing from the index {where} (an ingest is in"
                               " progress or was interrupted); re-run the ingest")
    return ShardedDataset(store, prefix, index)
