"""Dataset readers: every dataset is decoded once into uint8 tensors held in memory.

The training loop then augments and normalizes whole batches on tensors, so no
per-image work (PIL, pickling, file reads) happens while training.

Every bundle carries a fingerprint of the content it was decoded from (the CIFAR
archive's sha256, the imagefolder manifest's, the generated digits'): part of the run's
identity, and what the ranks compare before training together.

Memory: a split is one preallocated uint8 array (train and test are views of it), channel
statistics come from per-channel histograms, so loading peaks at about the decoded size.
An imagefolder whose decoded images would take more than DATASET_MEMORY_SHARE of the
process's memory limit is refused before decoding.
"""

from __future__ import annotations

import hashlib
import io
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np
import torch

from trainer import cifar
from trainer.config import DATASETS
from trainer.errors import DatasetError, ObjectNotFound
from trainer.layout import (
    IMAGE_SUFFIXES,
    MANIFEST_NAME,
    cifar10_key,
    dataset_prefix,
    is_image_name,
    manifest_key,
)
from trainer.memlimit import memory_limit_bytes
from trainer.storage import Store

log = logging.getLogger(__name__)

# Share of each class held out for testing when a dataset has no split of its own.
DIGITS_TEST_FRACTION = 0.2
IMAGEFOLDER_TEST_FRACTION = 0.15
# Decoded images may take at most this share of the memory limit: the rest is for the
# model, its optimizer state, activations and DDP's buffers (ResNet-18 at batch 128: ~1 GiB).
DATASET_MEMORY_SHARE = 0.25
# Generated datasets have no stored content to hash: a revision, bumped if the generator changes.
SYNTHETIC_FINGERPRINT = "generated:synthetic/1"
DECODE_THREADS = 8
__all__ = ["DATASETS", "DatasetBundle", "Split", "check_image_name", "load_dataset"]


@dataclass
class Split:
    """A whole split, decoded once."""

    images: torch.Tensor  # uint8, N x C x H x W, contiguous
    labels: torch.Tensor  # int64, N

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class DatasetBundle:
    name: str
    train: Split
    test: Split
    classes: list[str]
    mean: tuple[float, ...]  # per channel, for pixels scaled to [0, 1]
    std: tuple[float, ...]
    fingerprint: str
    """``sha256:<hex>`` of the content decoded (or a generator's revision)."""


def load_dataset(name: str, store: Store | None, *, prefix: str | None = None,
                 image_size: int = 32, synthetic_size: int = 2048, seed: int = 0,
                 max_decoded_bytes: int | None = None) -> DatasetBundle:
    """Load ``name`` (one of :data:`DATASETS`) into memory.

    ``cifar10`` and ``imagefolder`` read from ``store`` under ``prefix`` (default
    ``datasets/<name>``); ``digits`` and ``synthetic`` need no store. ``seed`` fixes
    every random choice (held-out splits, synthetic pixels). An imagefolder larger than
    ``max_decoded_bytes`` decoded (default: DATASET_MEMORY_SHARE of the memory limit) is
    refused before decoding.
    """
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if name in ("cifar10", "imagefolder") and store is None:
        raise DatasetError(f"dataset {name!r} is read from the object store, but no store was given")
    prefix = dataset_prefix(name, prefix)
    if name == "cifar10":
        bundle = _load_cifar10(store, cifar10_key(prefix))
    elif name == "imagefolder":
        if max_decoded_bytes is None:
            max_decoded_bytes = int(memory_limit_bytes() * DATASET_MEMORY_SHARE)
        bundle = _load_imagefolder(store, prefix, image_size, seed, max_decoded_bytes)
    elif name == "digits":
        bundle = _load_digits(seed)
    else:
        bundle = _synthetic(synthetic_size, image_size, seed)
    log.info("dataset %s: %d train / %d test images of %s, %d classes, %s", name,
             len(bundle.train), len(bundle.test), tuple(bundle.train.images.shape[1:]),
             len(bundle.classes), bundle.fingerprint)
    return bundle


def _split(images: np.ndarray, labels: np.ndarray) -> Split:
    return Split(torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8)),
                 torch.from_numpy(np.asarray(labels, dtype=np.int64)))


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 ``N x C x H x W`` images scaled to [0, 1].

    Exact, from a 256-bin histogram per channel summed in integers, over chunks of about a
    million pixels: no float copy of the images (which would be 8x their size).
    """
    array = images.numpy()
    channels, pixels = array.shape[1], array.shape[2] * array.shape[3]
    counts = np.zeros((channels, 256), dtype=np.int64)
    chunk = max(1, (1 << 20) // pixels)
    for start in range(0, len(array), chunk):
        for c in range(channels):
            counts[c] += np.bincount(array[start:start + chunk, c].reshape(-1), minlength=256)
    values = range(256)
    mean, std = [], []
    for c in range(channels):
        hist = [int(v) for v in counts[c]]
        n = sum(hist)
        s1 = sum(v * h for v, h in zip(values, hist))
        s2 = sum(v * v * h for v, h in zip(values, hist))
        m = s1 / n / 255.0
        sd = ((n * s2 - s1 * s1) / (n * n)) ** 0.5 / 255.0  # integers until here: exact
        mean.append(round(m, 6))
        # A constant channel would divide by zero when normalizing; leave it unscaled.
        std.append(round(sd, 6) if sd > 1e-6 else 1.0)
    return tuple(mean), tuple(std)


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, test)``: the same share of every class held out, fixed by ``seed``.

    Classes with a single example stay in train (there is nothing to hold out).
    """
    rng = np.random.default_rng(seed)
    train, test = [], []
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        n_test = round(len(idx) * test_fraction) if len(idx) > 1 else 0
        n_test = min(max(n_test, 1 if len(idx) > 1 else 0), len(idx) - 1)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


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
    return DatasetBundle("cifar10", _split(train_x, train_y), _split(test_x, test_y),
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
    train = _split(images[train_idx], labels[train_idx])
    mean, std = channel_stats(train.images)
    return DatasetBundle("digits", train, _split(images[test_idx], labels[test_idx]),
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


def imagefolder_layout(keys: list[str], prefix: str) -> dict[str, list[tuple[str, str]]]:
    """Group keys into ``{"all"|"train"|"test": [(class, key), ...]}``."""
    rel = [(k, PurePosixPath(k[len(prefix) + 1:])) for k in keys]
    rel = [(k, p) for k, p in rel if not any(part.startswith(".") for part in p.parts)]
    if not rel:
        raise DatasetError(f"no images under {prefix!r}: expected {prefix}/<class>/<image> "
                           f"or {prefix}/train|test/<class>/<image>")
    has_split = all(len(p.parts) == 3 and p.parts[0] in ("train", "test") for _, p in rel)
    groups: dict[str, list[tuple[str, str]]] = {}
    for key, path in rel:
        if len(path.parts) != (3 if has_split else 2):
            raise DatasetError(f"{key}: not in a class folder; expected {prefix}/<class>/<image>"
                               f" or {prefix}/train|test/<class>/<image>")
        group = path.parts[0] if has_split else "all"
        groups.setdefault(group, []).append((path.parts[-2], key))
    if has_split and set(groups) != {"train", "test"}:
        raise DatasetError(f"{prefix}: has {'/'.join(groups)} but needs both train/ and test/")
    return groups


def check_image_name(name: str) -> None:
    """Reject a file whose suffix is not an image format (shared by ingest and the reader)."""
    if not is_image_name(name):
        raise DatasetError(f"{name}: not an image file; allowed: {', '.join(IMAGE_SUFFIXES)}")


def parse_manifest(raw: bytes, prefix: str) -> dict[str, str]:
    """``{key: sha256}`` of an imagefolder manifest (``sha256sum`` format, paths under prefix)."""
    where = manifest_key(prefix)
    digests: dict[str, str] = {}
    try:
        lines = raw.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise DatasetError(f"{where}: not a UTF-8 text manifest; re-run the ingest") from None
    for number, line in enumerate(lines, 1):
        digest, sep, rel = line.partition("  ")
        parts = PurePosixPath(rel).parts
        if (not sep or len(digest) != 64 or not parts or rel.startswith("/")
                or ".." in parts):
            raise DatasetError(f"{where}, line {number}: expected '<sha256>  <class>/<image>', "
                               f"got {line!r}; re-run the ingest")
        digests[f"{prefix}/{rel}"] = digest
    return digests


@dataclass
class FolderListing:
    """What an imagefolder is made of: keys to read, their digests, the manifest itself."""

    keys: list[str]
    digests: dict[str, str] | None
    """sha256 per key, from the ingest manifest (None for a prefix filled by hand)."""
    manifest: bytes | None


def imagefolder_keys(store: Store, prefix: str) -> FolderListing:
    """The keys to read, and their digests when an ingest manifest lists them.

    With a manifest only its keys count: a re-ingest never deletes old objects, so
    removed files or classes stay under the prefix. Without one (a prefix filled by
    hand) every key under the prefix is read.
    """
    try:
        raw = store.get_bytes(manifest_key(prefix))
    except ObjectNotFound:
        return FolderListing(store.list(prefix + "/"), None, None)
    digests = parse_manifest(raw, prefix)
    log.info("%s: reading the %d files its manifest lists", prefix, len(digests))
    return FolderListing(sorted(digests), digests, raw)


def _image_bytes(store: Store, key: str, digest: str | None) -> tuple[bytes, str]:
    """The file's bytes and sha256, checked against its manifest entry when there is one."""
    try:
        data = store.get_bytes(key)
    except ObjectNotFound:
        if digest is None:
            raise
        raise DatasetError(f"{key}: listed in {MANIFEST_NAME} but missing from the store; "
                           "re-run the ingest") from None
    actual = hashlib.sha256(data).hexdigest()
    # A mismatch means an ingest is uploading over this folder right now, or it was
    # edited by hand: training on a mix of old and new files would be silently wrong.
    if digest is not None and actual != digest:
        raise DatasetError(f"{key}: content differs from its {MANIFEST_NAME} entry (an "
                           "ingest is in progress or was interrupted); re-run the ingest")
    return data, actual


def decode_image(data: bytes, image_size: int, where: str) -> np.ndarray:
    """uint8 ``3 x size x size`` pixels of an image file; DatasetError naming ``where``."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            img = img.convert("RGB").resize((image_size, image_size), Image.Resampling.BILINEAR)
            return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)
    except Image.DecompressionBombError as e:  # not an OSError: named here, not a traceback
        raise DatasetError(f"{where}: too many pixels to decode safely ({e})") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DatasetError(f"{where}: cannot be decoded as an image ({e})") from None


def _decoded_size_check(count: int, image_size: int, limit: int) -> None:
    size = count * 3 * image_size * image_size
    if size > limit:
        raise DatasetError(
            f"imagefolder: {count} images of 3x{image_size}x{image_size} decode to {size:,} "
            f"bytes, more than the limit of {limit:,} bytes ({DATASET_MEMORY_SHARE:.0%} of this "
            "process's memory limit; the rest is for training): lower image_size, use fewer "
            "images or give the training pods more memory (memoryPerWorker)")


def _split_order(groups, classes: list[str], seed: int) -> tuple[list, np.ndarray, int]:
    """Items in decode order (the training split first), their labels, the training count."""
    order = ("all",) if "all" in groups else ("train", "test")
    items = [item for group in order for item in groups[group]]
    labels = np.array([classes.index(cls) for cls, _ in items], dtype=np.int64)
    if "all" in groups:
        train_idx, test_idx = stratified_split(labels, IMAGEFOLDER_TEST_FRACTION, seed)
    else:
        train_idx, test_idx = np.arange(len(groups["train"])), np.arange(len(groups["train"]),
                                                                          len(items))
    picked = np.concatenate([train_idx, test_idx])
    return [items[i] for i in picked], labels[picked], len(train_idx)


def _decode_all(store: Store, items: list, listing: FolderListing, image_size: int,
                images: np.ndarray) -> list[str]:
    """Decode every item into its row of ``images``; return each file's sha256."""
    digests = listing.digests or {}
    seen = [""] * len(items)

    def decode_into(row: int) -> None:
        key = items[row][1]
        check_image_name(key)
        data, seen[row] = _image_bytes(store, key, digests.get(key))
        images[row] = decode_image(data, image_size, key)

    # Fetching and decoding overlap well in threads: S3 waits on the network, PIL
    # releases the GIL while decoding. Submitted in slices: no future per image at once.
    with ThreadPoolExecutor(max_workers=DECODE_THREADS) as pool:
        for start in range(0, len(items), 64 * DECODE_THREADS):
            list(pool.map(decode_into, range(start, min(start + 64 * DECODE_THREADS,
                                                        len(items)))))
    return seen


def _folder_fingerprint(prefix: str, listing: FolderListing, items: list,
                        seen: list[str]) -> str:
    """The manifest's sha256; for a folder without one, that of the manifest an ingest of
    exactly these files would write."""
    if listing.manifest is not None:
        return f"sha256:{hashlib.sha256(listing.manifest).hexdigest()}"
    lines = sorted(f"{digest}  {key[len(prefix) + 1:]}\n" for (_, key), digest in zip(items, seen))
    return f"sha256:{hashlib.sha256(''.join(lines).encode()).hexdigest()}"


def _load_imagefolder(store: Store, prefix: str, image_size: int, seed: int,
                      max_decoded_bytes: int) -> DatasetBundle:
    listing = imagefolder_keys(store, prefix)
    groups = imagefolder_layout(listing.keys, prefix)
    classes = sorted({cls for items in groups.values() for cls, _ in items})
    if len(classes) < 2:
        raise DatasetError(f"{prefix}: found classes {classes}, need at least 2 class folders")
    items, labels, n_train = _split_order(groups, classes, seed)
    _decoded_size_check(len(items), image_size, max_decoded_bytes)
    # One array; the splits are views of it (the training split first).
    images = np.empty((len(items), 3, image_size, image_size), dtype=np.uint8)
    seen = _decode_all(store, items, listing, image_size, images)
    train = Split(torch.from_numpy(images[:n_train]), torch.from_numpy(labels[:n_train]))
    test = Split(torch.from_numpy(images[n_train:]), torch.from_numpy(labels[n_train:]))
    mean, std = channel_stats(train.images)
    return DatasetBundle("imagefolder", train, test, classes, mean, std,
                         _folder_fingerprint(prefix, listing, items, seen))
