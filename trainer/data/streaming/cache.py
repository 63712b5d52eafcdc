"""A bounded read-ahead of shards on local disk (the pod's data cache emptyDir).

One thread downloads a rank's shards, in the order the rank will read them, through the
store seam (trainer.store.base: a local directory or S3), each checked against its index
sha256 as it streams by. It stays at most ``budget_bytes`` ahead; the trainer takes a
shard's file, reads it into memory and releases it at once, so the disk holds at most the
read-ahead and memory at most one shard. A failed download is raised to the reader, never
waited on for ever.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
from pathlib import Path

from trainer.contract.env import CACHE_BYTES_ENV, CACHE_DIR_ENV
from trainer.contract.errors import DatasetError, ObjectNotFound
from trainer.data.streaming.format import ShardInfo
from trainer.store import Store

log = logging.getLogger(__name__)

DEFAULT_CACHE_BYTES = 1 << 30


def cache_budget() -> tuple[Path, int]:
    """Where shards are cached and how many bytes they may take (the stack sets both from
    ``dataCacheSize``; outside a pod, the temp folder and DEFAULT_CACHE_BYTES)."""
    folder = Path(os.environ.get(CACHE_DIR_ENV) or tempfile.gettempdir())
    raw = os.environ.get(CACHE_BYTES_ENV, "").strip()
    if not raw:
        return folder, DEFAULT_CACHE_BYTES
    if not raw.isdigit() or int(raw) < 1:
        raise DatasetError(f"environment variable {CACHE_BYTES_ENV}={raw!r} must be a "
                           "positive number of bytes")
    return folder, int(raw)


class ShardCache:
    """Downloads ``shards`` in order into ``folder``, at most ``budget_bytes`` ahead."""

    def __init__(self, store: Store, shards: list[ShardInfo], folder: Path, budget_bytes: int):
        largest = max((s.bytes for s in shards), default=0)
        if largest > budget_bytes:
            raise DatasetError(f"{shards[0].key.rsplit('/', 1)[0]}: a shard of {largest:,} bytes "
                               f"does not fit the data cache of {budget_bytes:,} bytes: raise "
                               "dataCacheSize, or re-ingest with smaller shards")
        self.store, self.shards, self.budget = store, shards, budget_bytes
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = Path(tempfile.mkdtemp(prefix="shards-", dir=folder))
        self.ready: dict[int, Path] = {}
        self.held = 0
        self.error: BaseException | None = None
        self.closed = False
        self.condition = threading.Condition()
        self.thread = threading.Thread(target=self._download_all, name="shard-cache",
                                       daemon=True)
        self.thread.start()

    def _download_all(self) -> None:
        try:
            for number, shard in enumerate(self.shards):
                with self.condition:
                    self.condition.wait_for(lambda s=shard: self.closed
                                            or self.held + s.bytes <= self.budget)
                    if self.closed:
                        return
                    self.held += shard.bytes
                path = self._download(shard, number)
                with self.condition:
                    self.ready[number] = path
                    self.condition.notify_all()
        except BaseException as e:  # noqa: BLE001 (handed to the reader, which raises it)
            with self.condition:
                self.error = e
                self.condition.notify_all()

    def _download(self, shard: ShardInfo, number: int) -> Path:
        path = self.folder / f"{number:06d}.tar"
        digest = hashlib.sha256()
        try:
            with self.store.open_read(shard.key) as stream, path.open("wb") as out:
                while chunk := stream.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
        except ObjectNotFound:
            raise DatasetError(f"{shard.key}: listed in the shard index but missing from "
                               f"{self.store.url}; re-run the ingest") from None
        if digest.hexdigest() != shard.sha256:
            raise DatasetError(f"{shard.key}: corrupt shard (sha256 {digest.hexdigest()}, the "
                               f"index says {shard.sha256}): damaged, or from another dataset "
                               "version than the index; re-run the ingest")
        return path

    def take(self, number: int) -> Path:
        """The file of shard ``number`` (the numbers go in order), once it is downloaded."""
        with self.condition:
            self.condition.wait_for(lambda: number in self.ready or self.error is not None)
            if number not in self.ready:
                raise self.error  # type: ignore[misc]
            return self.ready[number]

    def release(self, number: int) -> None:
        """Shard ``number`` is read: its file goes, and the download after it may start."""
        with self.condition:
            path = self.ready.pop(number)
            path.unlink(missing_ok=True)
            self.held -= self.shards[number].bytes
            self.condition.notify_all()

    def close(self) -> None:
        with self.condition:
            self.closed = True
            self.condition.notify_all()
        self.thread.join()
        for path in self.folder.glob("*"):
            path.unlink(missing_ok=True)
        self.folder.rmdir()
