"""The imagefolder dataset: ``<class>/<image>`` files under a store prefix, decoded once.

With an ingest manifest (``.manifest.sha256``) only the files it lists are read, each
checked against its digest; the manifest's own digest is the dataset's fingerprint.
Without one (a prefix filled by hand) every image under the prefix is read, and the
fingerprint is that of the manifest an ingest of exactly those files would write.

Memory: the held-out split is chosen from the keys before anything is decoded, and every
image is decoded straight into its row of one preallocated uint8 array, training split
first, so train and test are views of it and loading peaks at about the decoded size. A
folder whose decoded images would take more than DATASET_MEMORY_SHARE of the process's
share of the memory limit (the pod's, over the processes torchrun starts in it) is refused
before decoding, with a message saying what to change.
"""

from __future__ import annotations

import hashlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np
import torch

from trainer.contract.errors import DatasetError, ObjectNotFound
from trainer.contract.layout import IMAGE_SUFFIXES, MANIFEST_NAME, is_image_name, manifest_key
from trainer.data import pixels
from trainer.data.dataset import DatasetBundle, Split, channel_stats, stratified_split
from trainer.limits.memlimit import process_memory_bytes
from trainer.store import Store

log = logging.getLogger(__name__)

# Share of each class held out for testing when there are no train/ and test/ folders.
IMAGEFOLDER_TEST_FRACTION = 0.15
# Decoded images may take at most this share of the memory limit: the rest is for the
# model, its optimizer state, activations and DDP's buffers (ResNet-18 at batch 128: ~1 GiB).
DATASET_MEMORY_SHARE = 0.25
DECODE_THREADS = 8


def accepted_layouts(root: str) -> str:
    """The two layouts an imagefolder may have, spelled out under ``root``."""
    return (f"{root}/<class>/<image> (a share of each class held out for testing), or "
            f"{root}/train/<class>/<image> and {root}/test/<class>/<image>")


def imagefolder_layout(keys: list[str], prefix: str) -> dict[str, list[tuple[str, str]]]:
    """Group keys into ``{"all"|"train"|"test": [(class, key), ...]}``, refusing any folder
    training would refuse (the one rule for ingest and the reader): errors name ``prefix``,
    the user's folder at ingest, the store's prefix in the reader."""
    rel = [(k, PurePosixPath(k[len(prefix) + 1:])) for k in keys]
    rel = [(k, p) for k, p in rel if not any(part.startswith(".") for part in p.parts)]
    if not rel:
        raise DatasetError(f"no images under {prefix!r}: expected {accepted_layouts(prefix)}")
    has_split = all(len(p.parts) == 3 and p.parts[0] in ("train", "test") for _, p in rel)
    groups: dict[str, list[tuple[str, str]]] = {}
    for key, path in rel:
        if len(path.parts) != (3 if has_split else 2):
            raise DatasetError(f"{key}: not in a class folder; expected "
                               f"{accepted_layouts(prefix)}")
        group = path.parts[0] if has_split else "all"
        groups.setdefault(group, []).append((path.parts[-2], key))
    if has_split and set(groups) != {"train", "test"}:
        raise DatasetError(f"{prefix}: has {'/'.join(groups)} but needs both train/ and test/")
    _check_trainable(groups, prefix)
    return groups


def _check_trainable(groups: dict[str, list[tuple[str, str]]], prefix: str) -> None:
    classes = sorted({cls for items in groups.values() for cls, _ in items})
    if len(classes) < 2:
        raise DatasetError(f"{prefix}: found {len(classes)} class {classes}, need at least 2 "
                           f"class folders: {accepted_layouts(prefix)}")
    if "all" in groups:
        counts: dict[str, int] = {}
        for cls, _ in groups["all"]:
            counts[cls] = counts.get(cls, 0) + 1
        if max(counts.values()) < 2:  # single-image classes stay in train (stratified_split)
            raise DatasetError(f"{prefix}: one image per class leaves nothing to test on; "
                               "give a class at least 2 images, or add test/ folders: "
                               f"{accepted_layouts(prefix)}")


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
    """uint8 ``3 x size x size`` pixels of an image file, by the one pixels function the
    app uses too (trainer.data.pixels); DatasetError naming ``where``."""
    try:
        return pixels.to_pixels(data, (3, image_size, image_size))
    except pixels.ImageTooLarge as e:
        raise DatasetError(f"{where}: too many pixels to decode safely ({e.reason})") from None
    except pixels.ImageError as e:  # its reason: the advice to the app's users is not for us
        raise DatasetError(f"{where}: cannot be decoded as an image ({e.reason})") from None


# What a folder too large to decode into memory can change, unless the caller knows better.
TOO_LARGE_ADVICE = ("lower image_size, use fewer images or give the training pods more memory "
                    "(memoryPerWorker)")


def _decoded_size_check(count: int, image_size: int, limit: int, advice: str) -> None:
    size = count * 3 * image_size * image_size
    if size > limit:
        raise DatasetError(
            f"imagefolder: {count} images of 3x{image_size}x{image_size} decode to {size:,} "
            f"bytes, more than the limit of {limit:,} bytes ({DATASET_MEMORY_SHARE:.0%} of this "
            f"process's share of the memory limit; the rest is for training): {advice}")


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
    """``sha256:<the manifest's sha256>+pixels@<trainer.data.pixels.REVISION>``; for a folder
    without a manifest, the sha256 of the manifest an ingest of exactly these files would
    write. The pixels revision: the same files give other pixels after it changes."""
    if listing.manifest is not None:
        manifest = listing.manifest
    else:
        # Ordered as the ingest orders its files: by path components.
        rows = sorted(((key[len(prefix) + 1:], digest) for (_, key), digest in zip(items, seen)),
                      key=lambda row: PurePosixPath(row[0]).parts)
        manifest = "".join(f"{digest}  {rel}\n" for rel, digest in rows).encode()
    return f"sha256:{hashlib.sha256(manifest).hexdigest()}+pixels@{pixels.REVISION}"


def load_imagefolder(store: Store, prefix: str, image_size: int, seed: int,
                     max_decoded_bytes: int | None = None,
                     too_large: str = TOO_LARGE_ADVICE) -> DatasetBundle:
    """The folder under ``prefix`` as a bundle (held-out split fixed by ``seed``); one that
    would decode to more than ``max_decoded_bytes`` is refused first, ``too_large`` saying
    what to do instead."""
    if max_decoded_bytes is None:
        max_decoded_bytes = int(process_memory_bytes() * DATASET_MEMORY_SHARE)
    listing = imagefolder_keys(store, prefix)
    groups = imagefolder_layout(listing.keys, prefix)
    classes = sorted({cls for items in groups.values() for cls, _ in items})
    items, labels, n_train = _split_order(groups, classes, seed)
    _decoded_size_check(len(items), image_size, max_decoded_bytes, too_large)
    # One array; the splits are views of it (the training split first).
    images = np.empty((len(items), 3, image_size, image_size), dtype=np.uint8)
    seen = _decode_all(store, items, listing, image_size, images)
    train = Split(torch.from_numpy(images[:n_train]), torch.from_numpy(labels[:n_train]))
    test = Split(torch.from_numpy(images[n_train:]), torch.from_numpy(labels[n_train:]))
    mean, std = channel_stats(train.images)
    return DatasetBundle("imagefolder", train, test, classes, mean, std,
                         _folder_fingerprint(prefix, listing, items, seen))
