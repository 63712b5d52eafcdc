"""The storage seam: one small interface, a local directory and an S3 implementation.

Keys look like ``models/resnet18-cifar10/latest.json`` (trainer.layout spells them).
Their first segment is the bucket (``datasets``, ``models``, ``metrics``); the local
store keeps the same layout as directories, so a local store can be uploaded to S3 as
it is and vice versa.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import logging
import os
import random
import re
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, TypeVar

from trainer.errors import BucketNotFound, ObjectNotFound, PreconditionFailed, StoreError
from trainer.layout import BUCKETS, split_key

log = logging.getLogger(__name__)

STORE_ENV = "TRAINSTACK_STORE"
T = TypeVar("T")


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
        _atomic_write(path, self.get_bytes(key))
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


def _write_temp(path: Path, data: bytes) -> str:
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


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = _write_temp(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _content_tag(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock of ``path`` among processes (flock on a hidden lock file next to
    it; the kernel releases it if the holder dies, so no stale lock outlives a crash)."""
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
        _atomic_write(path, data)

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
        tmp = _write_temp(path, data)
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
            _atomic_write(path, data)
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


class S3Store(Store):
    """Any S3-compatible server (MinIO in the cluster, moto in tests) via the minio client."""

    RETRIES = 5
    TRANSIENT_CODES = frozenset({"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout"})

    def __init__(self, endpoint: str, *, secure: bool = False):
        from minio import Minio  # imported here so local-only users need no minio

        access_key = os.environ.get("AWS_ACCESS_KEY_ID")
        secret_key = os.environ.get("AWS_SECRET_ACCESS_KEY")
        if not access_key or not secret_key:
            raise StoreError(
                f"S3 store {endpoint} needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                "in the environment"
            )
        self.url = f"{'s3s' if secure else 's3'}://{endpoint}"
        self.client = Minio(endpoint, access_key=access_key, secret_key=secret_key,
                            secure=secure, region=os.environ.get("AWS_REGION", "us-east-1"))

    def _call(self, what: str, key: str, fn: Callable[[], T]) -> T:
        from minio.error import S3Error
        from urllib3.exceptions import HTTPError

        for attempt in range(1, self.RETRIES + 1):
            try:
                return fn()
            except S3Error as e:
                if e.code in ("NoSuchKey", "NoSuchObject"):
                    raise ObjectNotFound(f"object {key!r} not found in {self.url}") from None
                if e.code == "NoSuchBucket":
                    raise BucketNotFound(
                        f"bucket {split_key(key)[0]!r} does not exist in {self.url}; "
                        "run `python -m trainer buckets` first"
                    ) from None
                if e.code not in self.TRANSIENT_CODES or attempt == self.RETRIES:
                    raise StoreError(f"{what} {key!r} on {self.url} failed: {e.code}: {e.message}")
            except (HTTPError, OSError) as e:
                if attempt == self.RETRIES:
                    raise StoreError(f"{what} {key!r}: {self.url} unreachable: {e}") from e
            delay = min(8.0, 0.25 * 2**attempt) * (0.5 + random.random())
            log.warning("%s %s failed (attempt %d/%d), retrying in %.1fs",
                        what, key, attempt, self.RETRIES, delay)
            time.sleep(delay)
        raise AssertionError("unreachable")

    def get_bytes(self, key: str) -> bytes:
        bucket, name = split_key(key)

        def get() -> bytes:
            resp = self.client.get_object(bucket, name)
            try:
                return resp.read()
            finally:
                resp.close()
                resp.release_conn()

        return self._call("get", key, get)

    def put_bytes(self, key: str, data: bytes) -> None:
        bucket, name = split_key(key)
        self._call("put", key, lambda: self.client.put_object(
            bucket, name, io.BytesIO(data), len(data)))

    def exists(self, key: str) -> bool:
        try:
            bucket, name = split_key(key)
            self._call("stat", key, lambda: self.client.stat_object(bucket, name))
            return True
        except ObjectNotFound:
            return False

    def list(self, prefix: str) -> list[str]:
        bucket, _, rest = prefix.strip("/").partition("/")
        if prefix.endswith("/") and rest:
            rest += "/"
        if not self._call("list", prefix, lambda: self.client.bucket_exists(bucket)):
            return []
        objects = self._call("list", prefix, lambda: list(
            self.client.list_objects(bucket, prefix=rest or None, recursive=True)))
        return sorted(f"{bucket}/{o.object_name}" for o in objects)

    def ensure_buckets(self, buckets: tuple[str, ...] = BUCKETS) -> list[str]:
        created = []
        for bucket in buckets:
            if not self._call("bucket_exists", bucket + "/",
                              lambda b=bucket: self.client.bucket_exists(b)):
                self._call("make_bucket", bucket + "/",
                           lambda b=bucket: self.client.make_bucket(b))
                created.append(bucket)
        return created

    def get_tagged(self, key: str) -> tuple[bytes, str]:
        bucket, name = split_key(key)

        def get() -> tuple[bytes, str]:
            resp = self.client.get_object(bucket, name)
            try:
                return resp.read(), resp.headers.get("ETag", "").strip('"')
            finally:
                resp.close()
                resp.release_conn()

        return self._call("get", key, get)

    def put_if_absent(self, key: str, data: bytes) -> str:
        return self._put_conditional(key, data, {"If-None-Match": "*"})

    def put_if_match(self, key: str, data: bytes, tag: str) -> str:
        return self._put_conditional(key, data, {"If-Match": f'"{tag}"'})

    def _put_conditional(self, key: str, data: bytes, condition: dict[str, str]) -> str:
        """The one place that sends S3's conditional-write headers. minio's put_object takes
        no headers; its _put_object (one PUT, which put_object also ends in) passes them."""
        from minio.error import S3Error

        bucket, name = split_key(key)

        def put() -> str:
            try:
                return self.client._put_object(bucket, name, data, headers=condition).etag
            except S3Error as e:
                # 412: the condition failed; 409: a concurrent conditional write won;
                # 404 on If-Match: the object it names is gone.
                if e.code in ("PreconditionFailed", "ConditionalRequestConflict") or (
                        "If-Match" in condition and e.code in ("NoSuchKey", "NoSuchObject")):
                    raise PreconditionFailed(f"conditional put {key!r} on {self.url}: "
                                             f"{e.code}") from None
                raise

        return self._call("put", key, put).strip('"')

    def delete(self, key: str) -> None:
        bucket, name = split_key(key)
        self._call("delete", key, lambda: self.client.remove_object(bucket, name))

    @contextlib.contextmanager
    def open_read(self, key: str) -> Iterator[BinaryIO]:
        bucket, name = split_key(key)
        resp = self._call("get", key, lambda: self.client.get_object(bucket, name))
        try:
            yield _StreamErrors(resp, f"get {key!r} from {self.url}")
        finally:
            resp.close()
            resp.release_conn()


class _StreamErrors(io.RawIOBase):
    """A streamed S3 response whose read failures are StoreErrors (a broken-off download
    cannot be retried transparently in the middle of a stream)."""

    def __init__(self, resp, what: str):
        super().__init__()
        self.resp, self.what = resp, what

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        from urllib3.exceptions import HTTPError

        try:
            data = self.resp.read(len(buffer))
        except (HTTPError, OSError) as e:
            raise StoreError(f"{self.what} broke off: {e}") from e
        buffer[:len(data)] = data
        return len(data)


def open_store(url: str | None = None) -> Store:
    """``s3://HOST:PORT`` (``s3s://`` for TLS) or a local directory; default $TRAINSTACK_STORE."""
    url = url or os.environ.get(STORE_ENV)
    if not url:
        raise StoreError(f"no store given: pass --store or set {STORE_ENV} "
                         "(s3://HOST:PORT or a local directory)")
    for scheme, secure in (("s3://", False), ("s3s://", True)):
        if url.startswith(scheme):
            endpoint = url[len(scheme):].rstrip("/")
            if not endpoint or "/" in endpoint:
                raise StoreError(f"store URL {url!r} must be {scheme}HOST:PORT")
            return S3Store(endpoint, secure=secure)
    if "://" in url:
        raise StoreError(f"store URL {url!r}: only s3://, s3s:// or a local path are allowed")
    return LocalStore(url)
