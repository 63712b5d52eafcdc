"""A memory budget for image decodes: a semaphore counted in bytes, not in requests.

Small uploads (a phone JPEG decoded at reduced size costs well under a megabyte) never
wait; big ones (a 50-megapixel PNG costs up to ~400 MB) wait until enough of the budget
is free, so concurrent hostile uploads cannot add up past the pod's memory limit.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import threading
from collections.abc import Iterator

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # glibc's mallopt() parameter number (malloc.h)


def share_one_malloc_arena() -> bool:
    """Make threads started from now on allocate from glibc's main arena.

    By default each thread gets an arena of its own, and a freed buffer stays in the arena
    of the thread that freed it: four decode threads that each once decoded a 98 MB
    picture, one after the other, held ~4 x 98 MB (measured) although the budget allowed
    one at a time. With one arena, the next decode reuses that memory. (Mapping every
    big buffer separately would too, but then each big tensor of a forward pass would be
    mapped and zero-filled anew.) False where the C library is not glibc.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        log.debug("no mallopt(): not glibc; thread arenas follow the C library's defaults")
        return False
    return bool(mallopt(M_ARENA_MAX, 1))


class OverBudget(ValueError):
    """One decode alone needs more than the whole budget."""


class MemoryBudget:
    def __init__(self, capacity_bytes: int):
        if capacity_bytes < 1:
            raise ValueError(f"memory budget must be positive, got {capacity_bytes}")
        self.capacity = capacity_bytes
        self.used = 0
        self.peak = 0  # the most ever reserved at once (tests, metrics)
        self._free = threading.Condition()

    @contextlib.contextmanager
    def reserve(self, nbytes: int) -> Iterator[None]:
        """Hold ``nbytes`` of the budget for the ``with`` block (waits until they are free)."""
        if nbytes > self.capacity:
            raise OverBudget(f"decoding it needs {nbytes / 2**20:.0f} MiB; the per-pod decode "
                             f"budget is {self.capacity / 2**20:.0f} MiB")
        with self._free:
            self._free.wait_for(lambda: self.used + nbytes <= self.capacity)
            self.used += nbytes
            self.peak = max(self.peak, self.used)
        try:
            yield
        finally:
            with self._free:
                self.used -= nbytes
                self._free.notify_all()

    @contextlib.contextmanager
    def hold_if_free(self, nbytes: int) -> Iterator[bool]:
        """Hold ``nbytes`` for the ``with`` block if they are free now (True); else hold
        nothing (False). Never waits: for the event loop (request bodies in flight)."""
        with self._free:
            held = self.used + nbytes <= self.capacity
            if held:
                self.used += nbytes
                self.peak = max(self.peak, self.used)
        try:
            yield held
        finally:
            if held:
                with self._free:
                    self.used -= nbytes
                    self._free.notify_all()
