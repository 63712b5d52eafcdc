"""Small archives in the exact CIFAR-10 python-version layout, generated for tests."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
           "dog", "frog", "horse", "ship", "truck"]
BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def make_batches(per_class: int = 2, seed: int = 0) -> dict[str, tuple[np.ndarray, list[int]]]:
    """``{batch name: (N x 3072 uint8 rows, labels)}`` with ``per_class`` images per class."""
    rng = np.random.default_rng(seed)
    batches = {}
    for name in BATCHES:
        labels = [int(c) for c in rng.permutation(np.repeat(np.arange(10), per_class))]
        batches[name] = (rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8), labels)
    return batches


def _pickled(obj: dict) -> bytes:
    # Protocol 2 with bytes keys, as the Python 2 original loads with encoding="bytes".
    return pickle.dumps(obj, protocol=2)


def archive_bytes(batches: dict, *, drop: str | None = None,
                  override: dict[str, bytes] | None = None,
                  label_names: list | None = None) -> bytes:
    members: dict[str, bytes] = {}
    for name, (data, labels) in batches.items():
        members[name] = _pickled({b"batch_label": name.encode(), b"labels": labels,
                                  b"data": data, b"filenames": [b"x.png"] * len(labels)})
    names = CLASSES if label_names is None else label_names
    members["batches.meta"] = _pickled({b"num_cases_per_batch": 10000, b"num_vis": 3072,
                                        b"label_names": [n.encode() for n in names]})
    members.update(override or {})
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, raw in members.items():
            if name == drop:
                continue
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return buf.getvalue()


def write_archive(path: Path, batches: dict, **kwargs) -> Path:
    path.write_bytes(archive_bytes(batches, **kwargs))
    return path


def expected_images(batches: dict, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """What a reader must return: images N x 3 x 32 x 32 in batch order, and labels."""
    data = np.concatenate([batches[n][0] for n in names]).reshape(-1, 3, 32, 32)
    return data, np.concatenate([batches[n][1] for n in names]).astype(np.int64)
