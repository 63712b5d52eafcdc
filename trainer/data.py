"""Dataset readers: every dataset is decoded once into uint8 tensors held in memory.

The training loop then augments and normalizes whole batches on tensors, so no
per-image work (PIL, pickling, file reads) happens while training.
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
from trainer.storage import Store

log = logging.getLogger(__name__)

# Share of each class held out for testing when a dataset has no split of its own.
DIGITS_TEST_FRACTION = 0.2
IMAGEFOLDER_TEST_FRACTION = 0.15
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


def load_dataset(name: str, store: Store | None, *, prefix: str | None = None,
                 image_size: int = 32, synthetic_size: int = 2048, seed: int = 0) -> DatasetBundle:
    """Load ``name`` (one of :data:`DATASETS`) into memory.

    ``cifar10`` and ``imagefolder`` read from ``store`` under ``prefix`` (default
    ``datasets/<name>``); ``digits`` and ``synthetic`` need no store. ``seed`` fixes
    every random choice (held-out splits, synthetic pixels).
    """
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if name in ("cifar10", "imagefolder") and store is None:
        raise DatasetError(f"dataset {name!r} is read from the object store, but no store was given")
    prefix = dataset_prefix(name, prefix)
    if name == "cifar10":
        bundle = _load_cifar10(store, cifar10_key(prefix))
    elif name == "imagefolder":
        bundle = _load_imagefolder(store, prefix, image_size, seed)
    elif name == "digits":
        bundle = _load_digits(seed)
    else:
        bundle = _synthetic(synthetic_size, image_size, seed)
    log.info("dataset %s: %d train / %d test images of %s, %d classes", name,
             len(bundle.train), len(bundle.test), tuple(bundle.train.images.shape[1:]),
             len(bundle.classes))
    return bundle


def _split(images: np.ndarray, labels: np.ndarray) -> Split:
    return Split(torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8)),
                 torch.from_numpy(np.asarray(labels, dtype=np.int64)))


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 ``N x C x H x W`` images scaled to [0, 1]."""
    x = images.transpose(0, 1).reshape(images.shape[1], -1).double() / 255.0
    mean, std = x.mean(dim=1), x.std(dim=1, correction=0)
    # A constant channel would divide by zero when normalizing; leave it unscaled.
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    return tuple(round(v, 6) for v in mean.tolist()), tuple(round(v, 6) for v in std.tolist())


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


def _load_cifar10(store: Store, key: str) -> DatasetBundle:
    try:
        raw = store.get_bytes(key)
    except ObjectNotFound:
        raise ObjectNotFound(f"CIFAR-10 archive {key!r} not found in {store.url}; run "
                             "`python -m trainer ingest --dataset cifar10` first") from None
    train_x, train_y, test_x, test_y, classes = cifar.read_archive(
        io.BytesIO(raw), f"{store.url}/{key}")
    return DatasetBundle("cifar10", _split(train_x, train_y), _split(test_x, test_y),
                         classes, cifar.MEAN, cifar.STD)


def _load_digits(seed: int) -> DatasetBundle:
    from sklearn.datasets import load_digits  # bundled with scikit-learn: works offline

    digits = load_digits()
    # Pixel values are 0..16; scale them to the 0..255 range every other dataset uses.
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, None, :, :]
    labels = digits.target.astype(np.int64)
    train_idx, test_idx = stratified_split(labels, DIGITS_TEST_FRACTION, seed)
    train = _split(images[train_idx], labels[train_idx])
    mean, std = channel_stats(train.images)
    return DatasetBundle("digits", train, _split(images[test_idx], labels[test_idx]),
                         [str(d) for d in range(10)], mean, std)


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
                         [f"class{i}" for i in range(10)], (mean,) * 3, (std,) * 3)


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


def imagefolder_keys(store: Store, prefix: str) -> tuple[list[str], dict[str, str] | None]:
    """The keys to read, and their digests when an ingest manifest lists them.

    With a manifest only its keys count: a re-ingest never deletes old objects, so
    removed files or classes stay under the prefix. Without one (a prefix filled by
    hand) every key under the prefix is read.
    """
    try:
        raw = store.get_bytes(manifest_key(prefix))
    except ObjectNotFound:
        return store.list(prefix + "/"), None
    digests = parse_manifest(raw, prefix)
    log.info("%s: reading the %d files its manifest lists", prefix, len(digests))
    return sorted(digests), digests


def _image_bytes(store: Store, key: str, digest: str | None) -> bytes:
    try:
        data = store.get_bytes(key)
    except ObjectNotFound:
        if digest is None:
            raise
        raise DatasetError(f"{key}: listed in {MANIFEST_NAME} but missing from the store; "
                           "re-run the ingest") from None
    # A mismatch means an ingest is uploading over this folder right now, or it was
    # edited by hand: training on a mix of old and new files would be silently wrong.
    if digest is not None and hashlib.sha256(data).hexdigest() != digest:
        raise DatasetError(f"{key}: content differs from its {MANIFEST_NAME} entry (an "
                           "ingest is in progress or was interrupted); re-run the ingest")
    return data


def _decode_image(store: Store, key: str, image_size: int,
                  digest: str | None = None) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    check_image_name(key)
    data = _image_bytes(store, key, digest)
    try:
        with Image.open(io.BytesIO(data)) as img:
            img = img.convert("RGB").resize((image_size, image_size), Image.Resampling.BILINEAR)
            return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DatasetError(f"{key}: cannot be decoded as an image ({e})") from None


def _load_imagefolder(store: Store, prefix: str, image_size: int, seed: int) -> DatasetBundle:
    keys, digests = imagefolder_keys(store, prefix)
    groups = imagefolder_layout(keys, prefix)
    classes = sorted({cls for items in groups.values() for cls, _ in items})
    if len(classes) < 2:
        raise DatasetError(f"{prefix}: found classes {classes}, need at least 2 class folders")
    order = ("all",) if "all" in groups else ("train", "test")
    items = [item for group in order for item in groups[group]]
    # Fetching and decoding overlap well in threads: S3 waits on the network, PIL
    # releases the GIL while decoding.
    with ThreadPoolExecutor(max_workers=8) as pool:
        decoded = list(pool.map(
            lambda it: _decode_image(store, it[1], image_size, (digests or {}).get(it[1])), items))
    images = np.stack(decoded)
    labels = np.array([classes.index(cls) for cls, _ in items], dtype=np.int64)
    if "all" in groups:
        train_idx, test_idx = stratified_split(labels, IMAGEFOLDER_TEST_FRACTION, seed)
    else:
        n_train = len(groups["train"])
        train_idx, test_idx = np.arange(n_train), np.arange(n_train, len(items))
    train = _split(images[train_idx], labels[train_idx])
    mean, std = channel_stats(train.images)
    return DatasetBundle("imagefolder", train, _split(images[test_idx], labels[test_idx]),
                         classes, mean, std)
