"""The serving engine: decode in a pool, run batches on one inference thread, answer.

Batched (the default): each request's image is decoded in the decode pool (under the
memory budget), then queued for the :class:`~inference.serving.batcher.Batcher`, whose single
thread owns the intra-op threads and runs one forward pass per batch.

One at a time (``batching=False``, the behaviour before batching, kept as the
benchmark's baseline): each request decodes and runs its own forward pass in a
worker thread, all requests in parallel. ``decode="full"`` (the baseline's other half)
decodes every pixel of a JPEG instead of libjpeg's reduced-size "draft".

Both paths call the same :class:`~inference.serving.runner.Runner`, so an image gets the same
answer either way (up to float rounding across batch sizes).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from starlette.concurrency import run_in_threadpool

from inference.published.versions import ModelVersion
from inference.serving.batcher import Batcher
from inference.serving.budget import MemoryBudget, share_one_malloc_arena
from inference.serving.metrics import Metrics
from inference.serving.predict import DEFAULT_MAX_PIXELS, answer, decode
from inference.serving.runner import PRECISIONS, PROGRAMS, Runner, choose_precision
from trainer.contract.errors import ConfigError

log = logging.getLogger(__name__)

RUNNERS_KEPT = 3  # the served version, the one before, one being prepared
PRECISIONS_KEPT = 256  # a few bytes per version: far more versions than a queue outlives
DECODES = ("draft", "full")


@dataclass(frozen=True)
class EngineConfig:
    batching: bool = True
    max_batch: int = 32
    max_wait_ms: float = 5.0
    precision: str = "auto"  # auto | fp32 | bf16 (runner.choose_precision)
    torch_threads: int = 1  # intra-op threads of the forward pass
    # ... of a lone request's (no other prediction in flight, uploading to answered: the
    # other CPUs are idle); at least torch_threads. Measured, resnet18 bf16 batch 1 on
    # 2 CPUs: 7.9 ms with 1 thread, 5.0 ms with 2.
    lone_threads: int = 0
    decode_threads: int = 2
    decode_memory_bytes: int = 512 * 2**20
    max_pixels: int = DEFAULT_MAX_PIXELS
    decode: str = "draft"  # draft | full (see the module docstring)
    program: str = "frozen"  # frozen | eager (inference.serving.runner)

    def __post_init__(self) -> None:
        limits = {"max_batch": 1, "max_wait_ms": 0, "torch_threads": 1, "lone_threads": 0,
                  "decode_threads": 1, "decode_memory_bytes": 1, "max_pixels": 1}
        for key, low in limits.items():
            if not getattr(self, key) >= low:
                raise ConfigError(f"invalid serving setting {key} = {getattr(self, key)!r}: "
                                  f"allowed: a number >= {low}", key=key)
        if self.precision not in PRECISIONS:
            raise ConfigError(f"invalid serving setting precision = {self.precision!r}: "
                              f"allowed: {', '.join(PRECISIONS)}", key="precision")
        for key, allowed in (("decode", DECODES), ("program", PROGRAMS)):
            if getattr(self, key) not in allowed:
                raise ConfigError(f"invalid serving setting {key} = {getattr(self, key)!r}: "
                                  f"allowed: {', '.join(allowed)}", key=key)

    @property
    def threads_alone(self) -> int:
        return max(self.lone_threads, self.torch_threads)


class Engine:
    def __init__(self, config: EngineConfig, metrics: Metrics | None = None):
        self.config, self.metrics = config, metrics
        share_one_malloc_arena()  # before the decode threads start: see budget.py
        self.budget = MemoryBudget(config.decode_memory_bytes)
        self.decode_pool = ThreadPoolExecutor(config.decode_threads, "decode")
        self._runners: OrderedDict[tuple[str, str], Runner] = OrderedDict()
        # Chosen once per version, while its examples are there: a runner rebuilt for a
        # request queued across later swaps must not re-choose without them.
        self._precisions: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._runners_lock = threading.Lock()
        # Predictions anywhere between their first byte and their answer (uploading,
        # parsing, decoding, queued, running): 1 means the server is idle but for that one.
        self._in_flight = 0
        self._in_flight_lock = threading.Lock()
        self.batcher: Batcher | None = None
        # Called with (version, pixels, probabilities) of every answered prediction, on the
        # request's thread: each must return at once (monitoring queues and returns).
        self.observers: list[Callable[[ModelVersion, np.ndarray, list[float]], None]] = []
        if config.batching:
            self.batcher = Batcher(self._run_batch, config.max_batch,
                                   config.max_wait_ms / 1000.0, thread_setup=self._own_threads)
        if metrics:
            metrics.decode_budget.set(config.decode_memory_bytes)
            metrics.threads.labels("intra_op").set(config.torch_threads)
            metrics.threads.labels("lone_request").set(
                config.threads_alone if self.batcher else 0)
            metrics.threads.labels("decode").set(config.decode_threads if self.batcher else 0)
            metrics.decode_reserved.set_function(lambda: self.budget.used)
            if self.batcher:
                self.batcher.on_batch.append(metrics.observe_batch)

    def _own_threads(self) -> None:
        torch.set_num_threads(self.config.torch_threads)

    # -- versions -------------------------------------------------------------------
    def prepare(self, version: ModelVersion) -> None:
        """Pick the precision, build the runner and warm it up (before the swap)."""
        runner = Runner(version, self._precision_of(version), self.config.program)
        blank = np.zeros(version.meta.input_size, np.uint8)
        with self.request():  # the CPUs are busy: no request runs alone meanwhile
            for size in sorted({1, self.config.max_batch if self.batcher else 1}):
                runner([blank] * size)  # first calls per shape build kernels, not a request
        with self._runners_lock:
            self._runners[(version.name, version.version)] = runner
            while len(self._runners) > RUNNERS_KEPT:
                self._runners.popitem(last=False)

    def _precision_of(self, version: ModelVersion) -> str:
        key = (version.name, version.version)
        with self._runners_lock:
            chosen = self._precisions.get(key)
        if chosen is None:
            chosen = choose_precision(version, self.config.precision)
            with self._runners_lock:
                self._precisions[key] = chosen
                while len(self._precisions) > PRECISIONS_KEPT:
                    self._precisions.popitem(last=False)
        return chosen

    def runner(self, version: ModelVersion) -> Runner:
        with self._runners_lock:
            runner = self._runners.get((version.name, version.version))
        if runner is None or runner.version is not version:
            self.prepare(version)  # a version swapped in without prepare (tests, tools)
            with self._runners_lock:
                runner = self._runners[(version.name, version.version)]
        return runner

    def precision(self, version: ModelVersion) -> str:
        return self.runner(version).precision

    # -- requests -------------------------------------------------------------------
    @contextmanager
    def request(self) -> Iterator[None]:
        """Around a prediction from its first byte: see :meth:`_run_batch`'s lone case."""
        with self._in_flight_lock:
            self._in_flight += 1
        try:
            yield
        finally:
            with self._in_flight_lock:
                self._in_flight -= 1

    def in_flight(self) -> int:
        with self._in_flight_lock:
            return self._in_flight

    def decode(self, version: ModelVersion, data: bytes) -> np.ndarray:
        return decode(data, version.meta, self.config.max_pixels, self.budget,
                      draft=self.config.decode == "draft")

    def _run_batch(self, version: ModelVersion, items: Sequence[np.ndarray]) -> list[list[float]]:
        runner = self.runner(version)
        lone, usual = self.config.threads_alone, self.config.torch_threads
        if len(items) > 1 or lone == usual or self.in_flight() > 1:
            return runner(items)
        # OpenMP's count is per thread: this thread's passes change, and back at once (torch
        # also sets the default of threads born meanwhile; none of ours runs torch then).
        torch.set_num_threads(lone)
        try:
            return runner(items)
        finally:
            torch.set_num_threads(usual)

    def predict_alone(self, version: ModelVersion, data: bytes) -> dict[str, Any]:
        """The one-at-a-time path: decode and forward in the calling thread."""
        pixels = self.decode(version, data)
        probabilities = self.runner(version)([pixels])[0]
        return self._answer(version, pixels, probabilities)

    async def classify(self, version: ModelVersion, data: bytes) -> dict[str, Any]:
        """Classify one upload with ``version`` (raises BadImage for bad input)."""
        if self.batcher is None:
            return await run_in_threadpool(self.predict_alone, version, data)
        loop = asyncio.get_running_loop()
        with self.batcher.expect() as ticket:
            pixels = await loop.run_in_executor(self.decode_pool, self.decode, version, data)
            future = ticket.submit(version, pixels)
        return self._answer(version, pixels, await asyncio.wrap_future(future))

    def classify_blocking(self, version: ModelVersion, data: bytes) -> dict[str, Any]:
        """:meth:`classify` for synchronous callers (the Gradio UI's worker threads)."""
        if self.batcher is None:
            return self.predict_alone(version, data)
        with self.batcher.expect() as ticket:
            pixels = self.decode_pool.submit(self.decode, version, data).result()
            future = ticket.submit(version, pixels)
        return self._answer(version, pixels, future.result())

    def _answer(self, version: ModelVersion, pixels: np.ndarray,
                probabilities: list[float]) -> dict[str, Any]:
        for observe in self.observers:
            observe(version, pixels, probabilities)
        return {**answer(probabilities, list(version.meta.classes)),
                "model_version": version.version}

    def close(self) -> None:
        if self.batcher:
            self.batcher.stop()
        self.decode_pool.shutdown(wait=False, cancel_futures=True)
