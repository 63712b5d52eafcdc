"""Put a dataset into the store once: download (progress, retries), verify, upload.

``python -m trainer ingest --dataset cifar10 [--source URL|PATH]``. The official
archive is checked against its published md5; any other source must open as the
CIFAR-10 python archive (the same validation the reader does). Next to the object
go ``<key>.md5`` and ``<key>.sha256`` (``sha256sum`` format), written after it, so
a re-run with the same content recognises it and uploads nothing.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from pathlib import Path, PurePosixPath

from trainer.contract.config import CIFAR10_URL
from trainer.contract.datasets import dataset_name_problem
from trainer.contract.errors import IngestError, ObjectNotFound
from trainer.contract.layout import cifar10_key, dataset_prefix
from trainer.data import cifar
from trainer.data.download import CHUNK, fetch, redacted_url
from trainer.store import Store

log = logging.getLogger(__name__)

# Alias of the one definition in trainer.contract.config; ingest() reads this module global, so
# tests can point it at a local server.
DEFAULT_CIFAR10_URL = CIFAR10_URL
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
NO_INGEST = ("digits", "synthetic")
# What a failed CIFAR-10 download suggests: a copy of the archive from elsewhere.
OFFLINE_HINT = ("without internet access, use a local copy of the archive: --source "
                "path/to/cifar-10-python.tar.gz (make demo: "
                "CIFAR10_SOURCE=path/to/cifar-10-python.tar.gz)")


def ingest(store: Store, dataset: str, source: str | None = None, *,
           expected_md5: str | None = None, image_size: int = 32,
           shard_bytes: int | None = None, name: str | None = None,
           replace: bool | None = None) -> str:
    """Ingest ``dataset`` from ``source``; return its store key ('' when none is needed).

    ``expected_md5`` defaults to the published digest when ``source`` is the official
    URL (or omitted); tests pass their own to exercise that path without the internet.
    ``name``: an image folder's own dataset name (``imagefolder-<label>``; default the
    kind's); ``replace``: see trainer.data.ingest_folder.ingest_folder.
    """
    problem = dataset_name_problem(dataset, name) if name else None
    if problem:
        raise IngestError(f"--dataset-name {name!r}: {problem}")
    if dataset in NO_INGEST:
        log.info("dataset %s is generated locally (%s): nothing to ingest", dataset,
                 "scikit-learn's bundled digits" if dataset == "digits" else "random pixels")
        return ""
    if dataset == "imagefolder":
        from trainer.data.ingest_folder import ingest_folder

        if not source:
            raise IngestError("imagefolder needs --source: a local directory, .zip or "
                              ".tar.gz of <class>/<image> folders")
        if image_size < 1 or (shard_bytes is not None and shard_bytes < 1):
            raise IngestError(f"--image-size ({image_size}) and --shard-mib "
                              f"({shard_bytes and shard_bytes // 1024**2}) must be >= 1")
        sizes = {"image_size": image_size, **({"shard_bytes": shard_bytes} if shard_bytes else {})}
        return ingest_folder(store, source, dataset_prefix(name or dataset), replace=replace,
                             **sizes)
    if dataset != "cifar10":
        raise IngestError(f"unknown dataset {dataset!r}; ingest knows cifar10 and "
                          f"imagefolder ({', '.join(NO_INGEST)} need no ingest)")
    if source is None or source == DEFAULT_CIFAR10_URL:
        source = DEFAULT_CIFAR10_URL
        expected_md5 = expected_md5 or CIFAR10_MD5
    return _ingest_cifar10(store, source, expected_md5)


def _stored_digest(store: Store, key: str) -> str | None:
    try:
        return store.get_bytes(key).decode().split()[0]
    except (ObjectNotFound, UnicodeDecodeError, IndexError):
        return None


def _ingest_cifar10(store: Store, source: str, expected_md5: str | None) -> str:
    shown = redacted_url(source)  # what logs and errors say: a URL's credentials stay out
    key = cifar10_key()
    name = PurePosixPath(key).name
    if expected_md5 and store.exists(key) and _stored_digest(store, key + ".md5") == expected_md5:
        log.info("%s already ingested in %s (md5 %s): nothing to do", key, store.url, expected_md5)
        return key
    with tempfile.TemporaryDirectory(prefix="trainstack-ingest-") as tmp:
        path = fetch(source, Path(tmp) / name, offline_hint=OFFLINE_HINT)
        md5, sha256 = file_digests(path)
        if expected_md5:
            verify_md5(md5, expected_md5, shown)
        if store.exists(key) and _stored_digest(store, key + ".sha256") == sha256:
            log.info("%s already ingested in %s (sha256 %s): nothing to do", key, store.url, sha256)
            return key
        if not expected_md5:
            with path.open("rb") as f:  # a custom source: prove it is the right format
                train_x, _, test_x, _, _ = cifar.read_archive(f, shown)
            log.info("%s is a valid CIFAR-10 archive: %d train / %d test images",
                     shown, len(train_x), len(test_x))
        log.info("uploading %s (%.1f MB) to %s", key, path.stat().st_size / 1e6, store.url)
        store.put_file(key, path)
        # The digests go last: their presence means the object is complete.
        store.put_bytes(key + ".md5", f"{md5}  {name}\n".encode())
        store.put_bytes(key + ".sha256", f"{sha256}  {name}\n".encode())
    log.info("ingested %s into %s/%s", shown, store.url, key)
    return key


def file_digests(path: Path) -> tuple[str, str]:
    """``(md5, sha256)`` hex digests of a file, in one read."""
    md5, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            md5.update(chunk)
            sha256.update(chunk)
    return md5.hexdigest(), sha256.hexdigest()


def verify_md5(actual: str, expected: str, source: str) -> None:
    if actual.lower() != expected.lower():
        raise IngestError(f"md5 mismatch for {source}: expected {expected}, got {actual}; "
                          "the download is corrupt or the file is not the official archive")
