"""Dynamic micro-batching: concurrent requests share one forward pass.

One inference thread takes the oldest queued request and collects more for the same
model version (the batch's ``key``) until ``max_batch`` are together, or ``max_wait``
has passed, or nothing more is coming: a request counts as coming from the moment its
decode starts (:meth:`Batcher.expect`), so a lone request is run at once, never held
back for a batch that cannot fill. Requests of another version wait for the next
batch: every batch is answered by exactly one version.

If a batch's run raises, each of its requests is run alone, so a failure is its own
request's and not its neighbours'.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Self

log = logging.getLogger(__name__)

# run(key, items) -> one result per item, in order.
RunBatch = Callable[[Any, Sequence[Any]], Sequence[Any]]


@dataclass
class Job:
    key: Any
    item: Any
    future: Future = field(default_factory=Future)
    queued_at: float = field(default_factory=time.perf_counter)


@dataclass(frozen=True)
class BatchRecord:
    """What an ``on_batch`` callback learns about each batch that ran."""

    key: Any
    size: int
    queue_waits: tuple[float, ...]  # seconds each request waited in the queue
    seconds: float  # the run itself


class Ticket:
    """A request on its way to the batcher: decode, then :meth:`submit` (or drop it)."""

    def __init__(self, batcher: Batcher):
        self._batcher, self._open = batcher, True

    def submit(self, key: Any, item: Any) -> Future:
        if not self._open:
            raise RuntimeError("this ticket was already used")
        self._open = False
        return self._batcher._enqueue(Job(key, item), expected=True)

    def close(self) -> None:
        """The request will not be submitted (e.g. its decode failed); idempotent."""
        if self._open:
            self._open = False
            self._batcher._unexpect()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Batcher:
    def __init__(self, run: RunBatch, max_batch: int = 32, max_wait_s: float = 0.005,
                 name: str = "inference", thread_setup: Callable[[], None] | None = None):
        if max_batch < 1 or max_wait_s < 0:
            raise ValueError(f"need max_batch >= 1 and max_wait_s >= 0, got {max_batch}, "
                             f"{max_wait_s}")
        self.run, self.max_batch, self.max_wait_s = run, max_batch, max_wait_s
        self.on_batch: list[Callable[[BatchRecord], None]] = []
        self._queue: deque[Job] = deque()
        self._expected = 0  # requests decoding now, to be submitted soon
        self._cond = threading.Condition()
        self._stopping = False
        self._setup = thread_setup
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def expect(self) -> Ticket:
        """Announce a request whose input is being prepared (see the module docstring)."""
        with self._cond:
            self._expected += 1
        return Ticket(self)

    def submit(self, key: Any, item: Any) -> Future:
        """Queue one request that was not announced; its future gets its result."""
        return self._enqueue(Job(key, item), expected=False)

    def stop(self, timeout: float = 30.0) -> None:
        """Answer what is queued, then end the thread; later submits fail at once."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout)

    def _enqueue(self, job: Job, expected: bool) -> Future:
        with self._cond:
            if expected:
                self._expected -= 1
            if self._stopping:
                job.future.set_exception(RuntimeError("the server is shutting down"))
                return job.future
            self._queue.append(job)
            self._cond.notify_all()
        return job.future

    def _unexpect(self) -> None:
        with self._cond:
            self._expected -= 1
            self._cond.notify_all()

    def _next_batch(self) -> list[Job] | None:
        """Block for the oldest job, then gather same-key jobs (None: stopped and empty)."""
        with self._cond:
            self._cond.wait_for(lambda: self._queue or self._stopping)
            if not self._queue:
                return None
            first = self._queue.popleft()
            batch = [first]
            deadline = time.perf_counter() + self.max_wait_s
            while len(batch) < self.max_batch:
                batch += self._take_same_key(first.key, self.max_batch - len(batch))
                if len(batch) >= self.max_batch or not self._expected or self._stopping:
                    break
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)  # woken by a submit or a dropped ticket
            return batch

    def _take_same_key(self, key: Any, limit: int) -> list[Job]:
        taken, kept = [], deque()
        while self._queue and len(taken) < limit:
            job = self._queue.popleft()
            (taken if job.key is key else kept).append(job)
        kept.extend(self._queue)
        self._queue = kept
        return taken

    def _loop(self) -> None:
        if self._setup:
            self._setup()
        while (batch := self._next_batch()) is not None:
            # A request whose client went away was cancelled: skip it (and from here on
            # its future can no longer be cancelled, so setting its result is safe).
            batch = [job for job in batch if job.future.set_running_or_notify_cancel()]
            if batch:
                self._run_batch(batch)

    def _run_batch(self, batch: list[Job]) -> None:
        start = time.perf_counter()
        waits = tuple(start - job.queued_at for job in batch)
        try:
            results = self.run(batch[0].key, [job.item for job in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"run returned {len(results)} results for {len(batch)} items")
        except Exception:
            if len(batch) > 1:
                log.exception("a batch of %d failed; running its requests one by one",
                              len(batch))
            for job in batch:
                self._run_alone(job)
        else:
            for job, result in zip(batch, results):
                job.future.set_result(result)
        record = BatchRecord(batch[0].key, len(batch), waits, time.perf_counter() - start)
        for callback in self.on_batch:
            try:
                callback(record)
            except Exception:
                log.exception("on_batch callback failed")

    def _run_alone(self, job: Job) -> None:
        try:
            job.future.set_result(self.run(job.key, [job.item])[0])
        except Exception as e:  # noqa: BLE001  delivered to the one request it belongs to
            job.future.set_exception(e)
