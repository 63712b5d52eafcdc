"""The storage seam: one small interface, a local directory and an S3 implementation.

Keys look like ``models/resnet18-cifar10/latest.json`` (trainer.layout spells them).
Their first segment is the bucket (``datasets``, ``models``, ``metrics``); the local
store keeps the same layout as directories, so a local store can be uploaded to S3 as
it is and vice versa.
"""

from __future__ import annotations

import functools
import inspect
import io
import logging
import os
import random
import re
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from trainer.errors import BucketNotFound, ConfigError, ObjectNotFound, StoreError
from trainer.layout import BUCKET_PREFIX_ENV, BUCKETS, bucket_names, split_key

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


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


class S3Store(Store):
    """Any S3-compatible server (MinIO in the cluster, moto in tests) via the minio client."""

    RETRIES = 5
    TRANSIENT_CODES = frozenset({"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout"})

    def __init__(self, endpoint: str, *, secure: bool = False, bucket_prefix: str | None = None,
                 region: str | None = None):
        """``endpoint`` is ``HOST:PORT`` (``HOST`` alone with TLS: port 443).

        Credentials come from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY; ``bucket_prefix``
        (default $TRAINSTACK_BUCKET_PREFIX) maps the logical bucket ``models`` to
        ``<prefix>models`` for every call, so keys in code stay logical; ``region``
        (default $AWS_REGION) signs requests for that region, else the client asks each
        bucket for its location.
        """
        from minio import Minio  # imported here so local-only users need no minio

        access_key = os.environ.get("AWS_ACCESS_KEY_ID")
        secret_key = os.environ.get("AWS_SECRET_ACCESS_KEY")
        if not access_key or not secret_key:
            raise StoreError(
                f"S3 store {endpoint} needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                "in the environment"
            )
        prefix = os.environ.get(BUCKET_PREFIX_ENV, "") if bucket_prefix is None else bucket_prefix
        try:
            self.bucket_names = bucket_names(prefix)
        except ValueError as e:
            raise ConfigError(f"{BUCKET_PREFIX_ENV}={prefix!r}: {e}",
                              key=BUCKET_PREFIX_ENV) from None
        self.bucket_prefix = prefix
        self.url = f"{'s3s' if secure else 's3'}://{endpoint}"
        client = Minio(endpoint, access_key=access_key, secret_key=secret_key, secure=secure,
                       region=region or os.environ.get("AWS_REGION") or None)
        self.client = _PrefixedBuckets(client, prefix) if prefix else client

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
        """Create missing buckets; return the store's names (prefixed) of those created."""
        created = []
        for bucket in buckets:
            if not self._call("bucket_exists", bucket + "/",
                              lambda b=bucket: self.client.bucket_exists(b)):
                self._call("make_bucket", bucket + "/",
                           lambda b=bucket: self.client.make_bucket(b))
                created.append(self.bucket_prefix + bucket)
        return created


class _PrefixedBuckets:
    """A minio client whose ``bucket_name`` arguments are logical (``models``) and reach
    the store as ``<prefix>models``: every method that takes one, so no Store method
    spells the mapping (list_buckets and other answers keep the store's own names)."""

    def __init__(self, client, prefix: str):
        self._client = client
        self._prefix = prefix

    def __getattr__(self, attr: str):
        value = getattr(self._client, attr)
        if not callable(value):
            return value
        try:
            signature = inspect.signature(value)
        except (TypeError, ValueError):
            return value
        if "bucket_name" not in signature.parameters:
            return value

        @functools.wraps(value)
        def with_prefix(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            if bound.arguments.get("bucket_name") is not None:
                bound.arguments["bucket_name"] = self._prefix + bound.arguments["bucket_name"]
            return value(*bound.args, **bound.kwargs)

        return with_prefix


# HOST is a DNS name or an IPv4 address; PORT 1-65535.
_ENDPOINT = re.compile(
    r"^(?P<host>[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?)(:(?P<port>\d{1,5}))?$")


def _s3_endpoint(url: str, scheme: str, port_required: bool) -> str:
    """``HOST[:PORT]`` of an ``s3://``/``s3s://`` URL; StoreError naming the allowed form."""
    form = f"{scheme}HOST:PORT" if port_required else f"{scheme}HOST[:PORT]"
    endpoint = url[len(scheme):].rstrip("/")
    match = _ENDPOINT.fullmatch(endpoint)
    port = match and match.group("port")
    if not match or (port_required and not port) or (port and not 0 < int(port) < 65536):
        raise StoreError(f"store URL {url!r} must be {form} (a host name or IPv4 address, "
                         "a port 1-65535)")
    return endpoint


def open_store(url: str | None = None) -> Store:
    """``s3://HOST:PORT`` (plain HTTP), ``s3s://HOST[:PORT]`` (TLS, port 443 by default) or a
    local directory; default $TRAINSTACK_STORE. An S3 store also reads $AWS_REGION and
    $TRAINSTACK_BUCKET_PREFIX."""
    url = url or os.environ.get(STORE_ENV)
    if not url:
        raise StoreError(f"no store given: pass --store or set {STORE_ENV} "
                         "(s3://HOST:PORT, s3s://HOST[:PORT] or a local directory)")
    if url.startswith("s3://"):
        return S3Store(_s3_endpoint(url, "s3://", port_required=True))
    if url.startswith("s3s://"):
        return S3Store(_s3_endpoint(url, "s3s://", port_required=False), secure=True)
    if "://" in url:
        raise StoreError(f"store URL {url!r}: only s3://, s3s:// or a local path are allowed")
    return LocalStore(url)
