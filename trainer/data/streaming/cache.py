"""A bounded read-ahead of shards on local disk (the pod's data cache emptyDir).

One thread downloads a rank's shards, in the order the rank will read them, through the
store seam (trainer.store.base: a local directory or S3), each checked against its index
sha256 as it streams by and read no further than the size its index entry gives (a larger
object is refused, not written whole). It stays at most ``budget_bytes`` ahead; the trainer
takes a shard's file, reads it into memory and releases it at once, so the disk holds at
most the read-ahead and memory at most one shard. A failed download is raised to the
reader, never waited on for ever.

The ranks of one pod (torchrun's LOCAL_WORLD_SIZE processes) share its emptyDir: each
takes an equal share of $TRAINSTACK_DATA_CACHE_BYTES (:func:`cache_budget`). Each
read-ahead is a folder of its own, locked (flock) by its process for as long as it lives;
a new one first removes the folders whose lock nobody holds any more: a killed rank's,
which a restarted container finds in the emptyDir it keeps.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path

from trainer.contract.env import CACHE_BYTES_ENV, CACHE_DIR_ENV
from trainer.contract.errors import DatasetError, ObjectNotFound
from trainer.data.streaming.format import ShardInfo
from trainer.limits.memlimit import local_processes
from trainer.store import Store

log = logging.getLogger(__name__)

DEFAULT_CACHE_BYTES = 1 << 30
CHUNK = 1 << 20
FOLDER_PREFIX = "shard-cache-"
OWNER_LOCK = ".owner"  # in each read-ahead's folder, flocked by its process
FOLDERS_LOCK = ".shard-cache.lock"  # next to them: one process at a time makes or removes


def cache_budget() -> tuple[Path, int]:
    """Where shards are cached and how many bytes this process's read-ahead may take: its
    share of what the pod's may (the stack sets the folder and the pod's bytes from
    ``dataCacheSize``; outside a pod, the temp folder and DEFAULT_CACHE_BYTES)."""
    folder = Path(os.environ.get(CACHE_DIR_ENV) or tempfile.gettempdir())
    raw = os.environ.get(CACHE_BYTES_ENV, "").strip()
    if not raw:
        return folder, DEFAULT_CACHE_BYTES // local_processes()
    if not raw.isdigit() or int(raw) < 1:
        raise DatasetError(f"environment variable {CACHE_BYTES_ENV}={raw!r} must be a "
                           "positive number of bytes")
    return folder, int(raw) // local_processes()


def _share_of(budget_bytes: int) -> str:
    """How ``budget_bytes`` came about, for a message."""
    processes = local_processes()
    if processes == 1:
        return f"the data cache ({budget_bytes:,} bytes)"
    return (f"this process's share of the data cache ({budget_bytes:,} bytes: "
            f"{CACHE_BYTES_ENV} over {processes} local processes)")


class ShardCache:
    """Downloads ``shards`` in order into ``folder``, at most ``budget_bytes`` ahead."""

    def __init__(self, store: Store, shards: list[ShardInfo], folder: Path, budget_bytes: int):
        largest = max((s.bytes for s in shards), default=0)
        if largest > budget_bytes:
            raise DatasetError(f"{shards[0].key.rsplit('/', 1)[0]}: a shard of {largest:,} bytes "
                               f"does not fit {_share_of(budget_bytes)}: raise "
                               "dataCacheSize, or re-ingest with smaller shards")
        self.store, self.shards, self.budget = store, shards, budget_bytes
        self.folder, self._owner = _claim_folder(folder)
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
        digest, written = hashlib.sha256(), 0
        try:
            with self.store.open_read(shard.key) as stream, path.open("wb") as out:
                # At most one byte past the indexed size: enough to know the object is larger.
                while chunk := stream.read(min(CHUNK, shard.bytes + 1 - written)):
                    written += len(chunk)
                    if written > shard.bytes:
                        raise DatasetError(
                            f"{shard.key}: larger than the {shard.bytes:,} bytes its index "
                            "entry says: replaced after the ingest, or from another dataset "
                            "version than the index; re-run the ingest")
                    digest.update(chunk)
                    out.write(chunk)
        except ObjectNotFound:
            path.unlink(missing_ok=True)
            raise DatasetError(f"{shard.key}: listed in the shard index but missing from "
                               f"{self.store.url}; re-run the ingest") from None
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        if digest.hexdigest() != shard.sha256:
            path.unlink(missing_ok=True)
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
        shutil.rmtree(self.folder, ignore_errors=True)
        os.close(self._owner)  # last: the folder is gone before anyone may take it for dead


def _claim_folder(parent: Path) -> tuple[Path, int]:
    """A new folder under ``parent`` for this process's read-ahead, and the descriptor of
    its lock (held until the process closes it or dies), once the folders whose owners
    died are removed. Under a lock of the parent, so no folder is seen before it is owned."""
    parent.mkdir(parents=True, exist_ok=True)
    guard = os.open(parent / FOLDERS_LOCK, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(guard, fcntl.LOCK_EX)
        _remove_abandoned(parent)
        folder = Path(tempfile.mkdtemp(prefix=FOLDER_PREFIX, dir=parent))
        owner = os.open(folder / OWNER_LOCK, os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return folder, owner
    finally:
        os.close(guard)


def _remove_abandoned(parent: Path) -> None:
    """Remove the read-ahead folders whose owner lock nobody holds (their process died)."""
    for folder in parent.glob(FOLDER_PREFIX + "*"):
        try:
            lock = os.open(folder / OWNER_LOCK, os.O_RDWR)
        except OSError:  # no lock file: not a read-ahead folder of this module's, leave it
            continue
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # its process is alive
        finally:
            os.close(lock)
        log.info("%s: removing the read-ahead of a process that is gone", folder)
        shutil.rmtree(folder, ignore_errors=True)
