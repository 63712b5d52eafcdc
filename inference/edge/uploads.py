"""Gradio's upload cache, size-capped: uploads are read once, then only take disk space.

Gradio itself deletes this app's files older than an age (``delete_cache``) and all of
them at shutdown; :func:`keep_uploads_under` adds a cap on their total size, so a burst
of big uploads cannot fill the pod's disk between two age sweeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator

log = logging.getLogger(__name__)


def trim(files: set[str], cap_bytes: int) -> int:
    """Delete the oldest of ``files`` until the rest total at most ``cap_bytes``.

    ``files`` (Gradio's set of this app's uploads) loses every entry that is gone.
    Returns the bytes freed. Call it from the event loop thread, where Gradio adds to
    the set, so both never touch it at once.
    """
    entries = []
    for path in list(files):
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            files.discard(path)
            continue
        entries.append((stat.st_ctime, stat.st_size, path))
    total = sum(size for _, size, _ in entries)
    freed = 0
    for _, size, path in sorted(entries):
        if total <= cap_bytes:
            break
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
        files.discard(path)
        total, freed = total - size, freed + size
    if freed:
        log.info("upload cache over %d MB: deleted %d bytes of the oldest uploads",
                 cap_bytes // 10**6, freed)
    return freed


@contextlib.asynccontextmanager
async def keep_uploads_under(files: set[str], cap_bytes: int,
                             every_s: float) -> AsyncIterator[None]:
    """While the app runs, trim ``files`` to ``cap_bytes`` every ``every_s`` seconds."""

    async def sweep() -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                trim(files, cap_bytes)
            except OSError:
                log.exception("could not trim the upload cache")

    task = asyncio.create_task(sweep())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
