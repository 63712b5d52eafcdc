"""The storage seam: one small interface (trainer.store.base), a local directory
(trainer.store.local) and an S3 implementation (here), opened from a URL.

Keys look like ``models/resnet18-cifar10/latest.json`` (trainer.contract.layout spells them).
Their first segment is the bucket (``datasets``, ``models``, ``metrics``); the local
store keeps the same layout as directories, so a local store can be uploaded to S3 as
it is and vice versa.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import io
import logging
import os
import random
import re
import time
from collections.abc import Callable, Iterator
from typing import BinaryIO, TypeVar

from trainer.contract.errors import (
    BucketNotFound,
    ConfigError,
    ObjectNotFound,
    PreconditionFailed,
    StoreError,
)
from trainer.contract.layout import BUCKET_PREFIX_ENV, BUCKETS, bucket_names, split_key
from trainer.store.base import Store
from trainer.store.local import LocalStore

log = logging.getLogger(__name__)

STORE_ENV = "TRAINSTACK_STORE"
T = TypeVar("T")
__all__ = ["BUCKETS", "STORE_ENV", "BucketNotFound", "LocalStore", "ObjectNotFound",
           "PreconditionFailed", "S3Store", "Store", "StoreError", "open_store"]


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
