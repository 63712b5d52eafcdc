"""A directory with the store's bucket layout: the embedded default for demos and tests.

A local store keeps the same layout as an S3 bucket set, so it can be uploaded to S3 as it
is and vice versa. Files are written whole and renamed into place (readers never see half
a file) with the mode a file would get from the umask, so an app running as another user
can read what the trainer wrote. Conditional writes: an exclusive create is a hard link of
a complete temp file (atomic, and it fails if the name exists); a replace-if-unchanged
holds an flock on a hidden lock file next to the object (released by the kernel if the
holder dies) while it compares and renames.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from trainer.contract.errors import BucketNotFound, ObjectNotFound, PreconditionFailed
from trainer.contract.layout import BUCKETS, split_key
from trainer.store.base import Store, atomic_write, write_temp


def _content_tag(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock of ``path`` among processes (no stale lock outlives a crash)."""
    with open(path.parent / f".{path.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class LocalStore(Store):
    """A directory with the bucket layout; the embedded default for demos and tests."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser().resolve()
        self.url = str(self.root)

    def _path(self, key: str) -> Path:
        bucket, name = split_key(key)
        path = (self.root / bucket / name).resolve()
        if self.root not in path.parents:
            raise ValueError(f"store key {key!r} escapes the store root")
        return path

    def _bucket_dir(self, key: str) -> Path:
        bucket_dir = self.root / split_key(key)[0]
        if not bucket_dir.is_dir():
            raise BucketNotFound(
                f"bucket {bucket_dir.name!r} does not exist in {self.url}; "
                "run `python -m trainer buckets` first"
            )
        return bucket_dir

    def get_bytes(self, key: str) -> bytes:
        self._bucket_dir(key)
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            raise ObjectNotFound(f"object {key!r} not found in {self.url}") from None

    def put_bytes(self, key: str, data: bytes) -> None:
        self._bucket_dir(key)
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, data)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> list[str]:
        bucket = prefix.strip("/").partition("/")[0]
        bucket_dir = self.root / bucket
        if not bucket or not bucket_dir.is_dir():
            return []
        keys = (
            p.relative_to(self.root).as_posix()
            for p in bucket_dir.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        )
        return sorted(k for k in keys if k.startswith(prefix))

    def ensure_buckets(self, buckets: tuple[str, ...] = BUCKETS) -> list[str]:
        created = [b for b in buckets if not (self.root / b).is_dir()]
        for bucket in buckets:
            (self.root / bucket).mkdir(parents=True, exist_ok=True)
        return created

    def get_tagged(self, key: str) -> tuple[bytes, str]:
        data = self.get_bytes(key)
        return data, _content_tag(data)

    def put_if_absent(self, key: str, data: bytes) -> str:
        self._bucket_dir(key)
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = write_temp(path, data)
        try:
            os.link(tmp, path)  # atomic, and fails if the name exists: an exclusive create
        except FileExistsError:
            raise PreconditionFailed(f"object {key!r} already exists in {self.url}") from None
        finally:
            os.unlink(tmp)
        return _content_tag(data)

    def put_if_match(self, key: str, data: bytes, tag: str) -> str:
        self._bucket_dir(key)
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(path):
            try:
                current = _content_tag(path.read_bytes())
            except FileNotFoundError:
                raise PreconditionFailed(f"object {key!r} is gone from {self.url}") from None
            if current != tag:
                raise PreconditionFailed(f"object {key!r} in {self.url} changed since it was read")
            atomic_write(path, data)
        return _content_tag(data)

    def delete(self, key: str) -> None:
        self._bucket_dir(key)
        self._path(key).unlink(missing_ok=True)

    @contextlib.contextmanager
    def open_read(self, key: str) -> Iterator[BinaryIO]:
        self._bucket_dir(key)
        try:
            f = self._path(key).open("rb")
        except (FileNotFoundError, IsADirectoryError):
            raise ObjectNotFound(f"object {key!r} not found in {self.url}") from None
        with f:
            yield f
