"""Dataset readers: every dataset is decoded once into uint8 tensors held in memory.

The training loop then augments and normalizes whole batches on tensors, so no
per-image work (PIL, pickling, file reads) happens while training.

Every bundle carries a fingerprint of the content it was decoded from (the CIFAR
archive's sha256, the imagefolder manifest's, the generated digits'): part of the run's
identity, and what the ranks compare before training together.

Memory: CIFAR-10 is decoded from a stream into one training array, an imagefolder into
one preallocated array (trainer.data.imagefolder), and channel statistics come from per-channel
histograms, so loading peaks at about the decoded size.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging

import numpy as np
import torch

from trainer.contract.config import DATASETS
from trainer.contract.errors import DatasetError, ObjectNotFound
from trainer.contract.layout import cifar10_key, dataset_prefix
from trainer.data import cifar
from trainer.data.dataset import DatasetBundle, Split, channel_stats, split_of, stratified_split
from trainer.store import Store

log = logging.getLogger(__name__)

# Share of each class held out for testing when a dataset has no split of its own.
DIGITS_TEST_FRACTION = 0.2
# Generated datasets have no stored content to hash: a revision, bumped if the generator changes.
SYNTHETIC_FINGERPRINT = "generated:synthetic/1"
__all__ = ["DATASETS", "DatasetBundle", "Split", "channel_stats", "load_dataset",
           "stratified_split"]


def load_dataset(name: str, store: Store | None, *, prefix: str | None = None,
                 image_size: int = 32, synthetic_size: int = 2048, seed: int = 0,
                 max_decoded_bytes: int | None = None, loading: str = "auto"):
    """Load ``name`` (one of :data:`DATASETS`) into memory.

    ``cifar10`` and ``imagefolder`` read from ``store`` under ``prefix`` (default
    ``datasets/<name>``); ``digits`` and ``synthetic`` need no store. ``seed`` fixes
    every random choice (held-out splits, synthetic pixels). An imagefolder larger than
    ``max_decoded_bytes`` decoded (default: trainer.data.imagefolder.DATASET_MEMORY_SHARE of
    this process's share of the memory limit, trainer.limits.memlimit.process_memory_bytes) is
    refused before decoding, unless an ingest wrote it as shards at ``image_size``: then it
    streams (a trainer.data.streaming.source.StreamedBundle) when ``loading`` is 'stream', or
    'auto' and it is larger than that.
    """
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if name in ("cifar10", "imagefolder") and store is None:
        raise DatasetError(f"dataset {name!r} is read from the object store, but no store was given")
    prefix = dataset_prefix(name, prefix)
    if name == "cifar10":
        bundle = _load_cifar10(store, cifar10_key(prefix))
    elif name == "imagefolder":
        bundle = _load_imagefolder(store, prefix, image_size, seed, max_decoded_bytes, loading)
    elif name == "digits":
        bundle = _load_digits(seed)
    else:
        bundle = _synthetic(synthetic_size, image_size, seed)
    if isinstance(bundle, DatasetBundle):
        log.info("dataset %s: %d train / %d test images of %s, %d classes, %s", name,
                 len(bundle.train), len(bundle.test), tuple(bundle.train.images.shape[1:]),
                 len(bundle.classes), bundle.fingerprint)
    return bundle


def _load_imagefolder(store: Store, prefix: str, image_size: int, seed: int,
                      max_decoded_bytes: int | None, loading: str):
    """From the ingest's shards when there are some at ``image_size`` (in memory or
    streamed), else from the files (in memory)."""
    from trainer.data.imagefolder import DATASET_MEMORY_SHARE
    from trainer.data.streaming.source import open_sharded
    from trainer.limits.memlimit import process_memory_bytes

    sharded = open_sharded(store, prefix, image_size)
    if sharded is None:
        return _from_files(store, prefix, image_size, seed, max_decoded_bytes, loading)
    if max_decoded_bytes is None:
        max_decoded_bytes = int(process_memory_bytes() * DATASET_MEMORY_SHARE)
    decoded = sharded.index.decoded_bytes()
    stream = loading == "stream" or (loading == "auto" and decoded > max_decoded_bytes)
    log.info(json.dumps({"event": "data", "dataset": prefix, "loading": "stream" if stream
                         else "memory", "decoded_bytes": decoded, "memory_share_bytes":
                         max_decoded_bytes, "train": sharded.index.count("train"),
                         "test": sharded.index.count("test"), "fingerprint":
                         sharded.index.fingerprint}))
    if not stream and decoded > max_decoded_bytes:
        raise DatasetError(f"data_loading: 'memory', but {prefix} decodes to {decoded:,} bytes, "
                           f"more than the {max_decoded_bytes:,} this process may hold: use "
                           "'auto' or 'stream', or give the pods more memory")
    return sharded.streamed() if stream else sharded.in_memory()


def _from_files(store: Store, prefix: str, image_size: int, seed: int,
                max_decoded_bytes: int | None, loading: str) -> DatasetBundle:
    """No shards at ``image_size``: the files, decoded into memory if they fit this process's
    share of it. Shards at another size are not resized to fit: their pixels are not what
    trainer.data.pixels makes of the files at ``image_size``, which is what the app serves."""
    from trainer.data.imagefolder import TOO_LARGE_ADVICE, load_imagefolder
    from trainer.data.streaming.source import shard_image_sizes

    ingest = (f"`python -m trainer ingest --dataset imagefolder --image-size {image_size} "
              "--source ...`")
    sizes = shard_image_sizes(store, prefix)
    missing = f"{prefix}: no shards at {image_size}px" + (
        f" (its shards are at {', '.join(f'{size}px' for size in sizes)})" if sizes else "")
    if loading == "stream":
        raise DatasetError(f"data_loading: 'stream', but {missing}: ingest it at that size: "
                           f"{ingest}")
    if not sizes:
        return load_imagefolder(store, prefix, image_size, seed, max_decoded_bytes,
                                f"{TOO_LARGE_ADVICE}; or ingest it to stream it: {ingest}")
    log.warning("%s: decoding its files at %dpx into memory; to stream them, ingest at that "
                "size: %s", missing, image_size, ingest)
    return load_imagefolder(store, prefix, image_size, seed, max_decoded_bytes,
                            f"{missing}: ingest it at that size to stream it ({ingest}), train "
                            f"at {sizes[0]}px, or give the training pods more memory "
                            "(memoryPerWorker)")


class _Hashing(io.RawIOBase):
    """Reads through ``stream`` while hashing every byte read."""

    def __init__(self, stream):
        super().__init__()
        self.stream, self.digest = stream, hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self.stream.readinto(buffer)
        self.digest.update(memoryview(buffer)[:n])
        return n

    def hexdigest_of_all(self) -> str:
        """The digest of the whole stream: what the archive reader left unread included."""
        while self.read(1 << 20):
            pass
        return self.digest.hexdigest()


def _ingested_sha256(store: Store, key: str) -> str | None:
    """The digest the ingest wrote next to the archive (``<key>.sha256``), if any."""
    try:
        return store.get_bytes(key + ".sha256").decode().split()[0]
    except (ObjectNotFound, UnicodeDecodeError, IndexError):
        return None


def _load_cifar10(store: Store, key: str) -> DatasetBundle:
    try:
        with store.open_read(key) as stream:
            hashing = _Hashing(stream)
            train_x, train_y, test_x, test_y, classes = cifar.read_archive(
                io.BufferedReader(hashing, 1 << 20), f"{store.url}/{key}")
            digest = hashing.hexdigest_of_all()
    except ObjectNotFound:
        raise ObjectNotFound(f"CIFAR-10 archive {key!r} not found in {store.url}; run "
                             "`python -m trainer ingest --dataset cifar10` first") from None
    ingested = _ingested_sha256(store, key)
    if ingested is not None and ingested != digest:
        raise DatasetError(f"{key}: its content (sha256 {digest}) is not what the ingest "
                           f"recorded ({ingested}): an ingest is replacing it; retry when it "
                           "has finished")
    return DatasetBundle("cifar10", split_of(train_x, train_y), split_of(test_x, test_y),
                         classes, cifar.MEAN, cifar.STD, f"sha256:{digest}")


def _load_digits(seed: int) -> DatasetBundle:
    from sklearn.datasets import load_digits  # bundled with scikit-learn: works offline

    digits = load_digits()
    # Pixel values are 0..16; scale them to the 0..255 range every other dataset uses.
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, None, :, :]
    labels = digits.target.astype(np.int64)
    content = hashlib.sha256(np.ascontiguousarray(images).tobytes())
    content.update(labels.tobytes())
    train_idx, test_idx = stratified_split(labels, DIGITS_TEST_FRACTION, seed)
    train = split_of(images[train_idx], labels[train_idx])
    mean, std = channel_stats(train.images)
    return DatasetBundle("digits", train, split_of(images[test_idx], labels[test_idx]),
                         [str(d) for d in range(10)], mean, std, f"sha256:{content.hexdigest()}")


def _synthetic(size: int, image_size: int, seed: int) -> DatasetBundle:
    """Uniform random pixels and labels, CIFAR-shaped: for throughput benchmarks only."""
    if size < 1:
        raise DatasetError(f"synthetic_size must be >= 1, got {size}")
    gen = torch.Generator().manual_seed(seed)
    test_size = max(10, size // 8)

    def split(n: int) -> Split:
        images = torch.randint(0, 256, (n, 3, image_size, image_size), dtype=torch.uint8,
                               generator=gen)
        return Split(images, torch.randint(0, 10, (n,), dtype=torch.int64, generator=gen))

    # Known statistics of uniform bytes, so big benchmark sets need no extra pass.
    mean, std = 127.5 / 255.0, ((256**2 - 1) / 12) ** 0.5 / 255.0
    return DatasetBundle("synthetic", split(size), split(test_size),
                         [f"class{i}" for i in range(10)], (mean,) * 3, (std,) * 3,
                         SYNTHETIC_FINGERPRINT)
