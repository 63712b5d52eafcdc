"""The CIFAR-10 python-version archive: validate, then decode into uint8 arrays.

Layout of ``cifar-10-python.tar.gz`` (https://www.cs.toronto.edu/~kriz/cifar.html):
``cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}``, each a pickled dict.
Batches hold ``data`` (N x 3072 uint8: the R, G and B planes of a 32 x 32 image, row
by row) and ``labels`` (N ints); ``batches.meta`` holds ``label_names``. The original
was written by Python 2, so its keys load as bytes; re-packed copies often use str.
"""

from __future__ import annotations

import io
import pickle
import tarfile
import zlib
from typing import IO, ClassVar

import numpy as np

from trainer.errors import DatasetError

ARCHIVE_DIR = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
MEMBERS = (*TRAIN_BATCHES, "test_batch", "batches.meta")
NUM_CLASSES = 10
IMAGE_SHAPE = (3, 32, 32)
# Per-channel statistics of the 50,000 training images, pixels scaled to [0, 1].
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
# A batch is 10,000 rows of 3,072 bytes; anything far bigger is not a CIFAR member.
MAX_MEMBER_BYTES = 64 * 1024 * 1024


class _ArraysOnly(pickle.Unpickler):
    """Unpickles dicts, lists, numbers, strings and numpy arrays; refuses any other class.

    A pickle can run arbitrary code through the globals it names, and the archive comes
    from a URL or path a user typed. Only the callables numpy needs to rebuild an array
    (plus ``_codecs.encode``, which protocol 2 uses for bytes) are resolved.
    """

    _ALLOWED: ClassVar[dict[tuple[str, str], object]] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("numpy.core.multiarray", "_reconstruct"): np.empty(0).__reduce__()[0],
        ("numpy._core.multiarray", "_reconstruct"): np.empty(0).__reduce__()[0],
        ("numpy.core.multiarray", "scalar"): np.int64(0).__reduce__()[0],
        ("numpy._core.multiarray", "scalar"): np.int64(0).__reduce__()[0],
        ("_codecs", "encode"): __import__("codecs").encode,
    }

    def find_class(self, module: str, name: str):
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: a CIFAR batch holds only arrays, "
                "lists and strings") from None


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _unpickle(raw: bytes, where: str) -> dict[str, object]:
    try:
        obj = _ArraysOnly(io.BytesIO(raw), encoding="bytes").load()
    except Exception as e:  # any unpickling failure means "not a CIFAR batch"
        raise DatasetError(f"{where}: not a pickled CIFAR batch ({e})") from e
    if not isinstance(obj, dict):
        raise DatasetError(f"{where}: expected a pickled dict, found {type(obj).__name__}")
    return {_text(k): v for k, v in obj.items()}


def _read_members(fileobj: IO[bytes], source: str) -> dict[str, bytes]:
    """One sequential pass over the gzip stream (seeking in gzip would re-decompress)."""
    wanted = {f"{ARCHIVE_DIR}/{m}": m for m in MEMBERS}
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=fileobj, mode="r|gz") as tar:
            for info in tar:
                name = wanted.get(info.name)
                if name is None:
                    continue
                if not info.isfile() or info.size > MAX_MEMBER_BYTES:
                    raise DatasetError(f"{source}: {info.name} is not a regular file of "
                                       f"at most {MAX_MEMBER_BYTES} bytes")
                found[name] = tar.extractfile(info).read()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise DatasetError(
            f"{source}: not a complete gzip-compressed tar archive ({e}); expected the "
            "CIFAR-10 python version, cifar-10-python.tar.gz") from None
    missing = [f"{ARCHIVE_DIR}/{m}" for m in MEMBERS if m not in found]
    if missing:
        raise DatasetError(f"{source}: missing {', '.join(missing)}; the CIFAR-10 python "
                           f"archive has {ARCHIVE_DIR}/{{{','.join(MEMBERS)}}}")
    return found


def _decode_batch(raw: bytes, where: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    batch = _unpickle(raw, where)
    data, labels = batch.get("data"), batch.get("labels")
    if not isinstance(data, np.ndarray) or labels is None:
        raise DatasetError(f"{where}: expected keys 'data' (numpy array) and 'labels', "
                           f"found {sorted(batch)}")
    row = int(np.prod(IMAGE_SHAPE))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != row:
        raise DatasetError(f"{where}: data is {data.dtype} {data.shape}, "
                           f"expected uint8 N x {row}")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: labels are not integers") from None
    if labels.shape != (data.shape[0],):
        raise DatasetError(f"{where}: {labels.size} labels for {data.shape[0]} images")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DatasetError(f"{where}: labels range {labels.min()}..{labels.max()}, "
                           f"expected 0..{num_classes - 1}")
    return data.reshape(-1, *IMAGE_SHAPE), labels


def read_archive(fileobj: IO[bytes], source: str):
    """Validate and decode an archive -> ``(train_x, train_y, test_x, test_y, classes)``.

    Images come back as contiguous uint8 ``N x 3 x 32 x 32``, labels as int64. Every
    problem raises :class:`DatasetError` naming ``source``, the member and what was expected.
    """
    members = _read_members(fileobj, source)
    meta = _unpickle(members["batches.meta"], f"{source}: batches.meta")
    names = meta.get("label_names")
    if not isinstance(names, list) or len(names) != NUM_CLASSES:
        raise DatasetError(f"{source}: batches.meta label_names is {names!r:.80}, "
                           f"expected a list of {NUM_CLASSES} class names")
    classes = [_text(n) for n in names]
    parts = [_decode_batch(members[m], f"{source}: {m}", NUM_CLASSES) for m in TRAIN_BATCHES]
    test_x, test_y = _decode_batch(members["test_batch"], f"{source}: test_batch", NUM_CLASSES)
    train_x = np.ascontiguousarray(np.concatenate([x for x, _ in parts]))
    train_y = np.concatenate([y for _, y in parts])
    return train_x, train_y, np.ascontiguousarray(test_x), test_y, classes
