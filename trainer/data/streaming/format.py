"""The sharded dataset contract: WebDataset tar shards of decoded pixels, and their index.

Under ``<prefix>/.shards/<size>px/`` (a dot folder: the imagefolder reader never lists it):
``train-00000.tar``, ..., ``test-00000.tar``, ... and ``index.json``, written last. A shard is
one WebDataset sample: ``<name>.pixels.npy`` (uint8 N x C x S x S, decoded by trainer.data.pixels
at ingest, so training and serving see the same pixels) and ``<name>.labels.npy`` (int64 N).
One sample of N images rather than N samples: reading a shard is then two array copies, not
N tar members through Python (architecture.md, "Streaming datasets").

The index names every shard with its count, size and sha256, the classes, per-split class
counts, channel statistics of the training split, the manifest fingerprint of the files the
shards were made from (``source_fingerprint``) and the dataset's own ``fingerprint``, which
the run identity uses whether the shards are held in memory or streamed.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from webdataset import TarWriter
from webdataset.tariterators import tar_file_iterator

from trainer.contract.errors import DatasetError

FORMAT = "trainstack-shards/1"
SPLITS = ("train", "test")
INDEX_NAME = "index.json"
SHARDS_FOLDER = ".shards"
_SHARD_NAME = re.compile(r"^(train|test)-\d{5}\.tar$")


def shards_prefix(prefix: str, image_size: int) -> str:
    """The folder of ``prefix``'s shards decoded at ``image_size`` pixels."""
    return f"{prefix}/{SHARDS_FOLDER}/{image_size}px/"


def index_key(prefix: str, image_size: int) -> str:
    return shards_prefix(prefix, image_size) + INDEX_NAME


def shard_key(prefix: str, image_size: int, split: str, number: int) -> str:
    return f"{shards_prefix(prefix, image_size)}{split}-{number:05d}.tar"


def is_shard_key(key: str) -> bool:
    return bool(_SHARD_NAME.match(key.rsplit("/", 1)[-1]))


def sharded_fingerprint(source_fingerprint: str) -> str:
    """The dataset's fingerprint: its files' one, plus the shard format (the held-out split
    is fixed at ingest, not by the training seed, so it is other data than the files')."""
    return f"{source_fingerprint}+{FORMAT}"


@dataclass(frozen=True)
class ShardInfo:
    key: str
    count: int
    bytes: int
    sha256: str


@dataclass
class ShardIndex:
    fingerprint: str
    source_fingerprint: str
    image_size: int
    channels: int
    classes: list[str]
    mean: list[float]
    std: list[float]
    shards: dict[str, list[ShardInfo]]
    """``{"train": [...], "test": [...]}`` in index order (the order shard numbers go)."""
    class_counts: dict[str, list[int]] = field(default_factory=dict)

    def count(self, split: str) -> int:
        return sum(s.count for s in self.shards[split])

    def decoded_bytes(self) -> int:
        """Bytes of every image of both splits decoded (what holding them in memory takes)."""
        per_image = self.channels * self.image_size ** 2
        return per_image * sum(self.count(split) for split in SPLITS)

    def largest_shard_bytes(self) -> int:
        return max(s.bytes for split in SPLITS for s in self.shards[split])

    def to_json(self) -> bytes:
        return json.dumps({"format": FORMAT, **asdict(self)}, indent=1).encode()

    @classmethod
    def from_json(cls, raw: bytes, where: str) -> ShardIndex:
        try:
            values: dict[str, Any] = json.loads(raw)
            if values.pop("format", None) != FORMAT:
                raise ValueError(f"not a {FORMAT} index")
            values["shards"] = {split: [ShardInfo(**s) for s in values["shards"][split]]
                                for split in SPLITS}
            index = cls(**values)
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise DatasetError(f"{where}: not a valid shard index ({e}); re-run the ingest") from None
        if not index.shards["train"] or not index.shards["test"]:
            raise DatasetError(f"{where}: lists no train or no test shard; re-run the ingest")
        return index


def write_shard(path: Path, name: str, images: np.ndarray, labels: np.ndarray) -> None:
    """One shard file: a WebDataset tar holding one sample of ``len(images)`` images."""
    with path.open("wb") as f, TarWriter(f) as writer:
        writer.write({"__key__": name, "pixels.npy": np.ascontiguousarray(images),
                      "labels.npy": np.asarray(labels, dtype=np.int64)})


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def read_shard(path: Path, shard: ShardInfo, index: ShardIndex) -> tuple[np.ndarray, np.ndarray]:
    """The pixels and labels of a downloaded shard, checked against its index entry; a
    DatasetError naming the shard for anything that does not match."""
    members: dict[str, bytes] = {}
    try:
        with path.open("rb") as f:
            for member in tar_file_iterator(f):
                members[member["fname"].rsplit(".", 2)[-2]] = member["data"]
        images = np.load(io.BytesIO(members["pixels"]), allow_pickle=False)
        labels = np.load(io.BytesIO(members["labels"]), allow_pickle=False)
    except (tarfile.TarError, KeyError, ValueError, OSError, EOFError) as e:
        raise DatasetError(f"{shard.key}: corrupt shard ({type(e).__name__}: {e}); re-run the "
                           "ingest") from None
    shape = (shard.count, index.channels, index.image_size, index.image_size)
    if (images.dtype != np.uint8 or images.shape != shape or labels.shape != (shard.count,)
            or labels.dtype != np.int64 or (len(labels) and not
                                            0 <= labels.min() <= labels.max() < len(index.classes))):
        raise DatasetError(f"{shard.key}: holds {images.dtype} {images.shape} pixels and "
                           f"{labels.dtype} {labels.shape} labels, the index says {shard.count} "
                           f"uint8 images of {shape[1:]} with labels below {len(index.classes)}; "
                           "re-run the ingest")
    return images, labels
