"""The CIFAR-10 python-version archive: validate, then decode into uint8 arrays.

Layout of ``cifar-10-python.tar.gz`` (https://www.cs.toronto.edu/~kriz/cifar.html):
``cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}``, each a pickled dict.
Batches hold ``data`` (N x 3072 uint8: the R, G and B planes of a 32 x 32 image, row
by row) and ``labels`` (N ints); ``batches.meta`` holds ``label_names``. The original
was written by Python 2, so its keys load as bytes; re-packed copies often use str.

The archive is read as a stream, one member at a time: each batch is validated and copied
into the one training array as soon as it is read, so the archive, its members and the
decoded arrays are never all in memory together. Types and lengths are checked before
anything is converted: a pickle can share one small list many times over, so a few kB of
nested ``labels`` would expand to gigabytes in ``np.asarray``.
"""

from __future__ import annotations

import io
import pickle
import tarfile
import zlib
from typing import IO, ClassVar

import numpy as np

from trainer.contract.errors import DatasetError

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


MAX_CLASS_NAME = 256


def _unpickle(raw: bytes, where: str) -> dict[str, object]:
    """The pickled dict; only its str/bytes keys (str() of any other key could expand)."""
    try:
        obj = _ArraysOnly(io.BytesIO(raw), encoding="bytes").load()
    except Exception as e:  # any unpickling failure means "not a CIFAR batch"
        raise DatasetError(f"{where}: not a pickled CIFAR batch ({e})") from e
    if not isinstance(obj, dict):
        raise DatasetError(f"{where}: expected a pickled dict, found {type(obj).__name__}")
    return {(k.decode("utf-8", "replace") if isinstance(k, bytes) else k): v
            for k, v in obj.items() if isinstance(k, (bytes, str))}


def _class_names(raw: bytes, where: str) -> list[str]:
    names = _unpickle(raw, where).get("label_names")
    ok = isinstance(names, list) and len(names) == NUM_CLASSES and all(
        isinstance(n, (bytes, str)) and 0 < len(n) <= MAX_CLASS_NAME for n in names)
    if not ok:
        what = f"a list of {len(names)}" if isinstance(names, list) else type(names).__name__
        raise DatasetError(f"{where}: label_names is {what}, expected a list of {NUM_CLASSES} "
                           f"class names (strings of 1 to {MAX_CLASS_NAME} characters)")
    return [n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names]


def _labels(labels: object, count: int, where: str) -> np.ndarray:
    """``labels`` as int64, checked for type and length BEFORE converting anything."""
    if isinstance(labels, np.ndarray):
        ok = labels.dtype.kind in "iu" and labels.ndim == 1
        length = len(labels) if labels.ndim == 1 else labels.size
    elif isinstance(labels, list):
        ok = all(type(v) is int or isinstance(v, np.integer) for v in labels)
        length = len(labels)
    else:
        raise DatasetError(f"{where}: labels are {type(labels).__name__}, expected a list of "
                           "integers")
    if length != count:
        raise DatasetError(f"{where}: {length} labels for {count} images")
    if not ok:
        raise DatasetError(f"{where}: labels must be a flat list of integers")
    values = np.array(labels, dtype=np.int64)
    if values.size and (values.min() < 0 or values.max() >= NUM_CLASSES):
        raise DatasetError(f"{where}: labels range {values.min()}..{values.max()}, "
                           f"expected 0..{NUM_CLASSES - 1}")
    return values


def _decode_batch(raw: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """``(N x 3072 uint8 rows, N int64 labels)`` of one pickled batch."""
    batch = _unpickle(raw, where)
    data, labels = batch.get("data"), batch.get("labels")
    if not isinstance(data, np.ndarray) or labels is None:
        raise DatasetError(f"{where}: expected keys 'data' (numpy array) and 'labels', "
                           f"found {sorted(batch)[:10]}")
    row = int(np.prod(IMAGE_SHAPE))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != row:
        raise DatasetError(f"{where}: data is {data.dtype} {data.shape}, "
                           f"expected uint8 N x {row}")
    if data.nbytes > len(raw):  # an array cannot hold more than the member that held it
        raise DatasetError(f"{where}: data of {data.nbytes} bytes from a {len(raw)}-byte member")
    return data, _labels(labels, data.shape[0], where)


class _Rows:
    """Training batches copied, in their order, into one array as they arrive: the batches
    and their concatenation are never in memory at once."""

    def __init__(self, expected_batches: int):
        self.expected, self.array, self.count = expected_batches, None, 0
        self.labels: list[np.ndarray] = []

    def append(self, rows: np.ndarray, labels: np.ndarray) -> None:
        if self.array is None:  # the official batches are equal-sized: room for all of them
            self.array = np.empty((len(rows) * self.expected, rows.shape[1]), np.uint8)
        if self.count + len(rows) > len(self.array):
            grown = np.empty((self.count + len(rows), rows.shape[1]), np.uint8)
            grown[:self.count] = self.array[:self.count]
            self.array = grown
        self.array[self.count:self.count + len(rows)] = rows
        self.count += len(rows)
        self.labels.append(labels)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        array = self.array[:self.count]
        if len(self.array) > self.count:  # a short batch: do not keep the unused rows
            array = array.copy()
        return array.reshape(-1, *IMAGE_SHAPE), np.concatenate(self.labels)


class _ArchiveReader:
    """Decodes members as the tar stream yields them; training batches go to ``train`` in
    TRAIN_BATCHES order (an early one waits, decoded, for those before it)."""

    def __init__(self, source: str):
        self.source = source
        self.train = _Rows(len(TRAIN_BATCHES))
        self.waiting: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.test: tuple[np.ndarray, np.ndarray] | None = None
        self.classes: list[str] | None = None
        self.seen: set[str] = set()

    def add(self, name: str, raw: bytes) -> None:
        self.seen.add(name)
        where = f"{self.source}: {name}"
        if name == "batches.meta":
            self.classes = _class_names(raw, where)
        elif name == "test_batch":
            data, labels = _decode_batch(raw, where)
            self.test = data.reshape(-1, *IMAGE_SHAPE), labels
        else:
            self.waiting[name] = _decode_batch(raw, where)
            for batch in TRAIN_BATCHES[len(self.train.labels):]:
                if batch not in self.waiting:
                    break
                self.train.append(*self.waiting.pop(batch))

    def result(self):
        missing = [f"{ARCHIVE_DIR}/{m}" for m in MEMBERS if m not in self.seen]
        if missing:
            raise DatasetError(f"{self.source}: missing {', '.join(missing)}; the CIFAR-10 "
                               f"python archive has {ARCHIVE_DIR}/{{{','.join(MEMBERS)}}}")
        train_x, train_y = self.train.result()
        return train_x, train_y, self.test[0], self.test[1], self.classes


def read_archive(fileobj: IO[bytes], source: str):
    """Validate and decode an archive -> ``(train_x, train_y, test_x, test_y, classes)``.

    Images come back as contiguous uint8 ``N x 3 x 32 x 32``, labels as int64. Every
    problem raises :class:`DatasetError` naming ``source``, the member and what was expected.
    One sequential pass over the gzip stream (seeking in gzip would re-decompress).
    """
    wanted = {f"{ARCHIVE_DIR}/{m}": m for m in MEMBERS}
    reader = _ArchiveReader(source)
    try:
        with tarfile.open(fileobj=fileobj, mode="r|gz") as tar:
            for info in tar:
                name = wanted.get(info.name)
                if name is None:
                    continue
                if not info.isfile() or info.size > MAX_MEMBER_BYTES or name in reader.seen:
                    raise DatasetError(f"{source}: {info.name} is not a single regular file "
                                       f"of at most {MAX_MEMBER_BYTES} bytes")
                reader.add(name, tar.extractfile(info).read())
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise DatasetError(
            f"{source}: not a complete gzip-compressed tar archive ({e}); expected the "
            "CIFAR-10 python version, cifar-10-python.tar.gz") from None
    return reader.result()
