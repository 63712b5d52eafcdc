"""Gradio's upload cache, size-capped: uploads are read once, then only take disk space.

Gradio itself deletes this app's files older than an age (``delete_cache``) and all of
them at shutdown. :class:`UploadCache` adds a cap on their total size, applied after every
request that sent a body (inference.edge.bodies.BoundedBodies calls :meth:`UploadCache.trim`),
so a burst of big uploads cannot fill the pod's disk (a 1Gi emptyDir) between two sweeps;
:func:`keep_uploads_under` recounts every file now and then (files Gradio deleted).

A file is counted at its size on disk plus its folder (Gradio puts each upload in a folder
named by its content's hash): a flood of tiny files fills a disk with blocks and folders,
not bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

log = logging.getLogger(__name__)

FOLDER_BYTES = 4096  # the folder Gradio makes for each upload, one block


def disk_bytes(path: str) -> int:
    """What ``path`` takes on disk, its folder included (FileNotFoundError if gone)."""
    stat = os.stat(path)
    return max(stat.st_size, stat.st_blocks * 512) + FOLDER_BYTES


class UploadCache:
    """Keeps ``files`` (Gradio's set of this app's uploads) under ``cap_bytes`` on disk.

    Call it from the event loop thread, where Gradio adds to the set, so both never touch
    it at once. Files are counted once, when first seen, so a trim after each upload costs
    a set difference, not a stat of every file.
    """

    def __init__(self, files: set[str], cap_bytes: int):
        self.files, self.cap_bytes = files, cap_bytes
        self.sizes: dict[str, int] = {}  # path -> bytes on disk, oldest first
        self.total = 0

    def trim(self) -> int:
        """Count new uploads, then delete the oldest until the rest fit; the bytes freed.

        The uploads first counted now are kept even if they alone are over the cap: their
        clients are about to use them (upload, then predict)."""
        new = self.files - self.sizes.keys()
        for path in new:
            try:
                size = disk_bytes(path)
            except FileNotFoundError:
                self.files.discard(path)
                continue
            self.sizes[path] = size
            self.total += size
        freed = 0
        while self.total > self.cap_bytes and self.sizes:
            path = next(iter(self.sizes))
            if path in new:
                break
            freed += self._forget(path)
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
            with contextlib.suppress(OSError):  # its folder, if nothing else is in it
                Path(path).parent.rmdir()
        if freed:
            log.info("upload cache over %d MB: deleted %d bytes of the oldest uploads",
                     self.cap_bytes // 10**6, freed)
        return freed

    def recount(self) -> int:
        """Forget files deleted by others (Gradio's age sweep), then trim."""
        for path in list(self.sizes):
            if not os.path.exists(path):
                self._forget(path)
        return self.trim()

    def _forget(self, path: str) -> int:
        size = self.sizes.pop(path)
        self.total -= size
        self.files.discard(path)
        return size


@contextlib.asynccontextmanager
async def keep_uploads_under(cache: UploadCache, every_s: float) -> AsyncIterator[None]:
    """While the app runs, recount and trim ``cache`` every ``every_s`` seconds."""

    async def sweep() -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                cache.recount()
            except OSError:
                log.exception("could not trim the upload cache")

    task = asyncio.create_task(sweep())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
