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
import sys
import tempfile
import time
from pathlib import Path, PurePosixPath

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from trainer import cifar
from trainer.config import CIFAR10_URL
from trainer.data import CIFAR10_KEY, DatasetError
from trainer.storage import ObjectNotFound, Store

log = logging.getLogger(__name__)

# Alias of the one definition in trainer.config; ingest() reads this module global, so
# tests can point it at a local server.
DEFAULT_CIFAR10_URL = CIFAR10_URL
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
NO_INGEST = ("digits", "synthetic")
TIMEOUT = (10, 60)  # seconds: connect, and between two bytes of the body
STREAM_ATTEMPTS = 3  # whole-download attempts when the body breaks off mid-way
CHUNK = 1024 * 1024


class IngestError(DatasetError):
    """The source cannot be fetched or is not the expected file."""


def ingest(store: Store, dataset: str, source: str | None = None, *,
           expected_md5: str | None = None) -> str:
    """Ingest ``dataset`` from ``source``; return its store key ('' when none is needed).

    ``expected_md5`` defaults to the published digest when ``source`` is the official
    URL (or omitted); tests pass their own to exercise that path without the internet.
    """
    if dataset in NO_INGEST:
        log.info("dataset %s is generated locally (%s): nothing to ingest", dataset,
                 "scikit-learn's bundled digits" if dataset == "digits" else "random pixels")
        return ""
    if dataset == "imagefolder":
        from trainer.ingest_folder import ingest_folder

        if not source:
            raise IngestError("imagefolder needs --source: a local directory, .zip or "
                              ".tar.gz of <class>/<image> folders")
        return ingest_folder(store, source)
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
    key = CIFAR10_KEY
    name = PurePosixPath(key).name
    if expected_md5 and store.exists(key) and _stored_digest(store, key + ".md5") == expected_md5:
        log.info("%s already ingested in %s (md5 %s): nothing to do", key, store.url, expected_md5)
        return key
    with tempfile.TemporaryDirectory(prefix="trainstack-ingest-") as tmp:
        path = fetch(source, Path(tmp) / name)
        md5, sha256 = file_digests(path)
        if expected_md5:
            verify_md5(md5, expected_md5, source)
        if store.exists(key) and _stored_digest(store, key + ".sha256") == sha256:
            log.info("%s already ingested in %s (sha256 %s): nothing to do", key, store.url, sha256)
            return key
        if not expected_md5:
            with path.open("rb") as f:  # a custom source: prove it is the right format
                train_x, _, test_x, _, _ = cifar.read_archive(f, source)
            log.info("%s is a valid CIFAR-10 archive: %d train / %d test images",
                     source, len(train_x), len(test_x))
        log.info("uploading %s (%.1f MB) to %s", key, path.stat().st_size / 1e6, store.url)
        store.put_file(key, path)
        # The digests go last: their presence means the object is complete.
        store.put_bytes(key + ".md5", f"{md5}  {name}\n".encode())
        store.put_bytes(key + ".sha256", f"{sha256}  {name}\n".encode())
    log.info("ingested %s into %s/%s", source, store.url, key)
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


def fetch(source: str, dest: Path) -> Path:
    """An http(s) URL is downloaded to ``dest``; a local path is used where it lies."""
    if source.startswith(("http://", "https://")):
        download(source, dest)
        return dest
    if "://" in source:
        raise IngestError(f"source {source!r}: only http://, https:// or a local path are allowed")
    path = Path(source).expanduser()
    if not path.is_file():
        raise IngestError(f"source {source!r}: no such file")
    return path


def _session() -> requests.Session:
    # Status and connection failures are retried by urllib3 with exponential backoff
    # (the first retry is immediate, then 2 s, 4 s, ...; Retry-After is honoured).
    retry = Retry(total=5, backoff_factor=1.0, status_forcelist=(429, 500, 502, 503, 504),
                  allowed_methods=frozenset({"GET"}), raise_on_status=False)
    session = requests.Session()
    session.mount("http://", HTTPAdapter(max_retries=retry))
    session.mount("https://", HTTPAdapter(max_retries=retry))
    return session


def download(url: str, dest: Path) -> None:
    """Stream ``url`` to ``dest`` with progress; restart if the body breaks off."""
    with _session() as session:
        for attempt in range(1, STREAM_ATTEMPTS + 1):
            try:
                _download_once(session, url, dest)
                return
            except (requests.ConnectionError, requests.Timeout,
                    requests.exceptions.ChunkedEncodingError) as e:
                if attempt == STREAM_ATTEMPTS:
                    raise IngestError(f"download of {url} failed after {attempt} attempts: "
                                      f"{e}") from None
                delay = 2.0 * attempt
                log.warning("download of %s broke off (%s); retrying in %.0fs", url, e, delay)
                time.sleep(delay)


def _download_once(session: requests.Session, url: str, dest: Path) -> None:
    with session.get(url, stream=True, timeout=TIMEOUT) as resp:
        if resp.status_code != 200:
            raise IngestError(f"download of {url} failed: HTTP {resp.status_code} "
                              f"{resp.reason}; check the dataset source URL")
        total = int(resp.headers.get("Content-Length") or 0) or None
        progress = _progress(total, PurePosixPath(dest).name)
        try:
            with dest.open("wb") as f:
                for chunk in resp.iter_content(CHUNK):
                    f.write(chunk)
                    progress.update(len(chunk))
        finally:
            progress.close()
    if total is not None and dest.stat().st_size != total:
        raise requests.exceptions.ChunkedEncodingError(
            f"got {dest.stat().st_size} of {total} bytes")


def _progress(total: int | None, desc: str):
    if sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024)
    return _LogProgress(total, desc)


class _LogProgress:
    """Progress for logs (pods, CI): a line every 10 s, not a redrawn bar."""

    INTERVAL = 10.0

    def __init__(self, total: int | None, desc: str):
        self.total, self.desc, self.done = total, desc, 0
        self.start = self.last = time.monotonic()

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= self.INTERVAL:
            self.last = now
            self._log("downloading")

    def close(self) -> None:
        self._log("downloaded")

    def _log(self, verb: str) -> None:
        seconds = max(time.monotonic() - self.start, 1e-6)
        of_total = f" of {self.total / 1e6:.1f} MB" if self.total else ""
        log.info("%s %s: %.1f MB%s (%.1f MB/s)", verb, self.desc, self.done / 1e6, of_total,
                 self.done / 1e6 / seconds)
