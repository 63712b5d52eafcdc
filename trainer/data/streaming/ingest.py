"""Write an imagefolder as shards (trainer.data.streaming.format) after its files are ingested.

Every image is decoded once, by trainer.data.pixels at ``image_size`` (what the app serves with),
into shards of at most ``shard_bytes`` of pixels. The held-out split is fixed here (the
folder's train/ and test/, else IMAGEFOLDER_TEST_FRACTION of each class by INGEST_SEED) and
each split is shuffled once before it is cut, so every shard mixes the classes. Memory:
one shard of pixels at a time; channel statistics come from running histograms.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np

from trainer.contract.errors import ObjectNotFound
from trainer.data.dataset import stratified_split
from trainer.data.imagefolder import IMAGEFOLDER_TEST_FRACTION, decode_image, imagefolder_layout
from trainer.data.streaming.format import (
    SPLITS,
    ShardIndex,
    ShardInfo,
    file_sha256,
    index_key,
    is_shard_key,
    shard_key,
    sharded_fingerprint,
    shards_prefix,
    write_shard,
)
from trainer.data.streaming.source import manifest_fingerprint
from trainer.limits.footprint import DEFAULT_SHARD_BYTES
from trainer.store import Store

log = logging.getLogger(__name__)

INGEST_SEED = 0
CHANNELS = 3


def split_items(files: list[Path], rel: list[str], prefix: str
                ) -> tuple[list[str], dict[str, list[tuple[Path, int]]]]:
    """The classes, and each split's ``(file, label)`` in the order its shards hold them."""
    groups = imagefolder_layout([f"{prefix}/{r}" for r in rel], prefix)
    path_of = {f"{prefix}/{r}": path for path, r in zip(files, rel)}
    classes = sorted({cls for items in groups.values() for cls, _ in items})
    rng = np.random.default_rng(INGEST_SEED)
    if "all" in groups:
        items = groups["all"]
        labels = np.array([classes.index(cls) for cls, _ in items], dtype=np.int64)
        train, test = stratified_split(labels, IMAGEFOLDER_TEST_FRACTION, INGEST_SEED)
        chosen = {"train": [items[i] for i in train], "test": [items[i] for i in test]}
    else:
        chosen = {split: groups[split] for split in SPLITS}
    return classes, {split: [(path_of[key], classes.index(cls))
                             for cls, key in (chosen[split][i] for i in
                                              rng.permutation(len(chosen[split])))]
                     for split in SPLITS}


def shards_current(store: Store, prefix: str, image_size: int) -> bool:
    """Whether shards at ``image_size`` exist for exactly the files the manifest lists."""
    try:
        raw = store.get_bytes(index_key(prefix, image_size))
    except ObjectNotFound:
        return False
    index = ShardIndex.from_json(raw, index_key(prefix, image_size))
    return index.source_fingerprint == manifest_fingerprint(store, prefix)


def write_shards(store: Store, prefix: str, files: list[Path], rel: list[str], *,
                 image_size: int, shard_bytes: int = DEFAULT_SHARD_BYTES) -> ShardIndex:
    """Decode ``files`` (named ``rel`` under ``prefix``) into shards in the store; the index
    goes last, then shards an earlier ingest left and this index does not name are deleted."""
    classes, splits = split_items(files, rel, prefix)
    per_shard = max(1, shard_bytes // (CHANNELS * image_size ** 2))
    histogram = np.zeros((CHANNELS, 256), dtype=np.int64)
    shards: dict[str, list[ShardInfo]] = {}
    with tempfile.TemporaryDirectory(prefix="trainstack-shards-") as tmp:
        for split in SPLITS:
            shards[split] = []
            items = splits[split]
            for number, start in enumerate(range(0, len(items), per_shard)):
                chunk = items[start:start + per_shard]
                images = np.empty((len(chunk), CHANNELS, image_size, image_size), np.uint8)
                for row, (path, _) in enumerate(chunk):
                    images[row] = decode_image(path.read_bytes(), image_size, str(path))
                if split == "train":
                    for c in range(CHANNELS):
                        histogram[c] += np.bincount(images[:, c].reshape(-1), minlength=256)
                key = shard_key(prefix, image_size, split, number)
                local = Path(tmp) / key.rsplit("/", 1)[-1]
                write_shard(local, local.stem, images, np.array([lab for _, lab in chunk]))
                store.put_file(key, local)
                shards[split].append(ShardInfo(key, len(chunk), local.stat().st_size,
                                               file_sha256(local)))
                local.unlink()
    mean, std = _stats(histogram)
    source = manifest_fingerprint(store, prefix)
    index = ShardIndex(sharded_fingerprint(source), source, image_size, CHANNELS, classes, mean,
                       std, shards, {split: np.bincount([lab for _, lab in splits[split]],
                                                        minlength=len(classes)).tolist()
                                     for split in SPLITS})
    store.put_bytes(index_key(prefix, image_size), index.to_json())
    named = {s.key for split in SPLITS for s in shards[split]}
    for key in store.list(shards_prefix(prefix, image_size)):
        if is_shard_key(key) and key not in named:
            store.delete(key)
    log.info("%s: %d train / %d test images in %d shards of <= %d images at %dpx", prefix,
             index.count("train"), index.count("test"), len(named), per_shard, image_size)
    return index


def _stats(histogram: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of pixels scaled to [0, 1], as trainer.data.dataset computes them."""
    mean, std = [], []
    for counts in histogram:
        n = int(counts.sum())
        s1, s2 = int((counts * np.arange(256)).sum()), int((counts * np.arange(256) ** 2).sum())
        m, sd = s1 / n / 255.0, ((n * s2 - s1 * s1) / (n * n)) ** 0.5 / 255.0
        mean.append(round(m, 6))
        std.append(round(sd, 6) if sd > 1e-6 else 1.0)
    return mean, std
