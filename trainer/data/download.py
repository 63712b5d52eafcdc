"""Fetch an ingest source: an http(s) URL is downloaded (progress, retries), a path is used.

Shared by the CIFAR-10 and imagefolder ingests (trainer.data.ingest, trainer.data.ingest_folder).
"""

from __future__ import annotations

import logging
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from trainer.contract.errors import IngestError
from trainer.contract.urls import DOWNLOAD_URL_RULE, BadURL, display_url, download_url

log = logging.getLogger(__name__)

TIMEOUT = (10, 60)  # seconds: connect, and between two bytes of the body
STREAM_ATTEMPTS = 3  # whole-download attempts when the body breaks off mid-way
CHUNK = 1024 * 1024


def redacted_url(url: str) -> str:
    """``url`` for logs and errors: scheme, host, port and path only. Userinfo and the
    query (a presigned URL's signature, a token) are credentials. A local path (no
    ``://``) is returned as it is."""
    if "://" not in url:
        return url
    return display_url(url).partition("#")[0]


def _scrubbed(text: str, url: str) -> str:
    """An error's text (requests quotes the URL's path and query) without ``url``'s
    credentials."""
    parts = urlsplit(url)
    for secret in (parts.query, parts.password, parts.username):
        if secret:
            text = text.replace(secret, "<redacted>")
    return text


def fetch(source: str, dest: Path, max_bytes: int | None = None,
          offline_hint: str = "") -> Path:
    """An http(s) URL is downloaded to ``dest``; a local path is used where it lies. Either
    may be at most ``max_bytes`` long (IngestError otherwise, before the disk fills).
    ``offline_hint`` ends the error of a download that could not connect (what to do
    without a network)."""
    if "://" in source:
        try:
            url = download_url(source)
        except BadURL as problem:
            raise IngestError(f"source {redacted_url(source)!r}: {problem}; allowed: "
                              f"{DOWNLOAD_URL_RULE}, or a local path") from None
        download(url, dest, max_bytes, offline_hint)
        return dest
    path = Path(source).expanduser()
    if not path.exists():
        raise IngestError(f"source {source!r} does not exist; expected a local file or an "
                          "http(s) URL")
    if not path.is_file():
        raise IngestError(f"source {source!r} is not a file; expected a local file or an "
                          "http(s) URL")
    if max_bytes is not None and path.stat().st_size > max_bytes:
        raise IngestError(f"source {source!r} is larger than {max_bytes:,} bytes")
    return path


def _session() -> requests.Session:
    # Status failures are retried by urllib3 with exponential backoff (the first retry is
    # immediate, then 2 s, 4 s, ...; Retry-After is honoured). Connection failures are not
    # (connect=0, read=0): download() retries those itself, with one short line each, and
    # not at all when the host name does not resolve (no network: retrying cannot help).
    retry = Retry(total=5, connect=0, read=0, other=0, backoff_factor=1.0,
                  status_forcelist=(429, 500, 502, 503, 504),
                  allowed_methods=frozenset({"GET"}), raise_on_status=False)
    session = requests.Session()
    session.mount("http://", HTTPAdapter(max_retries=retry))
    session.mount("https://", HTTPAdapter(max_retries=retry))
    return session


def download(url: str, dest: Path, max_bytes: int | None = None, offline_hint: str = "") -> None:
    """Stream ``url`` to ``dest`` with progress; restart if the connection fails or the
    body breaks off (STREAM_ATTEMPTS in all), except when the host name does not resolve."""
    shown = redacted_url(url)
    hint = f"; {offline_hint}" if offline_hint else ""
    with _session() as session:
        for attempt in range(1, STREAM_ATTEMPTS + 1):
            try:
                _download_once(session, url, dest, max_bytes)
                return
            except (requests.ConnectionError, requests.Timeout,
                    requests.exceptions.ChunkedEncodingError) as e:
                reason = _scrubbed(failure_reason(e), url)
                if _unresolvable(e):
                    raise IngestError(f"download of {shown} failed: cannot resolve "
                                      f"{urlsplit(url).hostname} (no network or no DNS?)"
                                      f"{hint}") from None
                if attempt == STREAM_ATTEMPTS:
                    raise IngestError(f"download of {shown} failed after {attempt} attempts: "
                                      f"{reason}{hint}") from None
                delay = 2.0 * attempt
                log.warning("download of %s: %s; retry %d of %d in %.0f s", shown, reason,
                            attempt, STREAM_ATTEMPTS - 1, delay)
                time.sleep(delay)


def _causes(error: BaseException) -> Iterator[BaseException]:
    """``error`` and what it wraps: requests -> urllib3's MaxRetryError -> its reason -> the
    socket error (``args[0]``, ``reason``, ``__cause__``, ``__context__``)."""
    seen: set[int] = set()
    todo = [error]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        linked = [current.__cause__, current.__context__, getattr(current, "reason", None),
                  current.args[0] if current.args else None]
        todo.extend(e for e in linked if isinstance(e, BaseException))


def _unresolvable(error: BaseException) -> bool:
    return any(isinstance(e, socket.gaierror) for e in _causes(error))


def failure_reason(error: BaseException) -> str:
    """A few words for a failed connection, not urllib3's nested reprs."""
    causes = list(_causes(error))
    for kind, words in ((ConnectionRefusedError, "connection refused"),
                        (ConnectionResetError, "connection reset"),
                        (TimeoutError, "timed out"), (socket.gaierror, "name not resolved")):
        if any(isinstance(e, kind) for e in causes):
            return words
    if isinstance(error, requests.Timeout):
        return "timed out"
    if isinstance(error, requests.exceptions.ChunkedEncodingError):
        return f"the download broke off ({str(error)[:100]})"
    return str(error)[:160]


def _download_once(session: requests.Session, url: str, dest: Path,
                   max_bytes: int | None) -> None:
    shown = redacted_url(url)
    with session.get(url, stream=True, timeout=TIMEOUT) as resp:
        if resp.status_code != 200:
            raise IngestError(f"download of {shown} failed: HTTP {resp.status_code} "
                              f"{resp.reason}; check the dataset source URL")
        total = int(resp.headers.get("Content-Length") or 0) or None
        too_big = IngestError(f"download of {shown}: larger than {max_bytes or 0:,} bytes")
        if max_bytes is not None and total is not None and total > max_bytes:
            raise too_big
        progress, done = _progress(total, PurePosixPath(dest).name), 0
        try:
            with dest.open("wb") as f:
                for chunk in resp.iter_content(CHUNK):
                    done += len(chunk)
                    if max_bytes is not None and done > max_bytes:
                        raise too_big
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
