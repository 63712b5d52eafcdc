"""The storage seam: what the trainer and the app need from object storage, nothing more.

Keys look like ``models/resnet18-cifar10/latest.json`` (trainer.contract.layout spells them). Their
first segment is the bucket (``datasets``, ``models``, ``metrics``). Implementations:
trainer.store.local.LocalStore (a directory) and trainer.store.s3.S3Store; trainer.store.s3
re-exports both and opens either from a URL.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import BinaryIO

from trainer.contract.layout import BUCKETS


class Store(ABC):
    """What the trainer and the app need from object storage, nothing more."""

    url: str

    @abstractmethod
    def get_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None:
        """Write an object; readers see the old or the new content, never a mix."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str) -> list[str]:
        """Every key under ``prefix`` (recursively), sorted."""

    @abstractmethod
    def ensure_buckets(self, buckets: tuple[str, ...] = BUCKETS) -> list[str]:
        """Create missing buckets; return the ones that were created."""

    # Conditional writes: what moves latest.json forward and claims version folders. A tag
    # (S3's ETag) changes whenever the object is written. Keys written conditionally are
    # never written unconditionally by the trainer.
    @abstractmethod
    def get_tagged(self, key: str) -> tuple[bytes, str]:
        """The object and its tag; ObjectNotFound if there is none."""

    @abstractmethod
    def put_if_absent(self, key: str, data: bytes) -> str:
        """Create the object only if the key is free (exclusive create); return its tag.
        PreconditionFailed if an object exists: readers never see half of either."""

    @abstractmethod
    def put_if_match(self, key: str, data: bytes, tag: str) -> str:
        """Replace the object only if its tag is still ``tag``; return the new tag.
        PreconditionFailed if it was written since (or is gone)."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove an object; a missing one is not an error."""

    @abstractmethod
    def open_read(self, key: str) -> contextlib.AbstractContextManager[BinaryIO]:
        """The object as a stream, for large objects that need not be in memory at once.
        Read failures raise StoreError; ObjectNotFound if there is none."""

    def put_file(self, key: str, path: str | os.PathLike) -> None:
        self.put_bytes(key, Path(path).read_bytes())

    def get_file(self, key: str, path: str | os.PathLike) -> Path:
        """Download ``key`` to ``path`` atomically (a reader never sees half a file)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, self.get_bytes(key))
        return path

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url})"


def _file_mode() -> int:
    """What ``open()`` would give a new file: 0o666 less the umask (mkstemp gives 0o600,
    which locks out an app that reads the store as another user)."""
    try:
        match = re.search(r"^Umask:\s+([0-7]+)$", Path("/proc/self/status").read_text(),
                          re.MULTILINE)
        umask = int(match.group(1), 8) if match else 0o022
    except OSError:
        umask = 0o022
    return 0o666 & ~umask


def write_temp(path: Path, data: bytes) -> str:
    """A complete, fsynced copy of ``data`` under a hidden temp name next to ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _file_mode())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def atomic_write(path: Path, data: bytes) -> None:
    tmp = write_temp(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
