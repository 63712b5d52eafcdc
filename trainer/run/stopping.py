"""Ctrl-C and SIGTERM during training: stop once, cleanly, and remember why.

SIGINT: torchrun forwards the terminal's SIGINT to each worker (they run in sessions of
their own). The first one raises KeyboardInterrupt as Python's default does;
``interrupted()`` then tells the loop to mark the run's progress record as interrupted, and
the entry point to print one line instead of a traceback when the interruption surfaced as
another error (a peer that stopped first breaks a collective: gloo raises a RuntimeError).
Further SIGINTs are ignored while the process winds down.

SIGTERM: a deleted pod (Kueue's preemption, a drained node, a rescale that replaces the
job). Inside ``termination_deferred()`` (the epochs) it only sets a flag: every rank learns
at its next step that one of them got it (:class:`StopVote`), all stop after the same step,
rank 0 writes a mid-epoch checkpoint there, and the process exits with 143 (the run lease
is released on the way out). The pod's grace period (30 s) is then spent on one step and
one checkpoint, not lost: the next admission resumes where it stopped. Anywhere else it
raises SystemExit(143) at once, so ``finally`` blocks (the lease) still run.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from collections.abc import Iterator

log = logging.getLogger(__name__)

TERM_EXIT = 128 + signal.SIGTERM  # the exit status of a process SIGTERM ended


class _Received:
    interrupted = False
    terminated_at: float | None = None  # time.monotonic() of the first SIGTERM
    deferring = False


_received = _Received()


def _on_sigint(signum, frame) -> None:
    if _received.interrupted:
        return
    _received.interrupted = True
    raise KeyboardInterrupt


def _on_sigterm(signum, frame) -> None:
    if _received.terminated_at is not None:
        return  # torchrun and the kubelet may both send it: the first one counts
    _received.terminated_at = time.monotonic()
    if not _received.deferring:
        raise SystemExit(TERM_EXIT)
    log.warning("SIGTERM: every rank stops after its next step; rank 0 checkpoints there")


def install() -> None:
    signal.signal(signal.SIGINT, _on_sigint)
    signal.signal(signal.SIGTERM, _on_sigterm)


def interrupted() -> bool:
    """Whether this process got SIGINT."""
    return _received.interrupted


def terminating() -> bool:
    """Whether this process got SIGTERM."""
    return _received.terminated_at is not None


def seconds_since_sigterm() -> float | None:
    at = _received.terminated_at
    return None if at is None else time.monotonic() - at


@contextlib.contextmanager
def termination_deferred() -> Iterator[None]:
    """Within: SIGTERM only sets the flag the step loop's StopVote reads. Leaving normally
    with SIGTERM received (it came after the last step was voted on) exits then."""
    _received.deferring = True
    try:
        yield
    finally:
        _received.deferring = False
    if terminating():
        raise SystemExit(TERM_EXIT)


class StopVote:
    """Whether any rank got SIGTERM, agreed by every rank after the same step.

    After each step every rank starts a one-element all-reduce (max) of its own flag and
    waits for the one it started after the step before: the vote travels while the next
    step trains, so no step waits for it, and every rank reads the same result after the
    same step (a step late at most). Alone (no process group) the flag is read directly.
    """

    def __init__(self, device):
        import torch.distributed as dist

        self.device = device
        self.distributed = dist.is_available() and dist.is_initialized()
        self._pending = None  # (work, tensor) of the vote started after the last step

    def after_step(self) -> bool:
        """Call after every step, on every rank; True once every rank is to stop here."""
        if not self.distributed:
            return terminating()
        if self.settle():
            return True
        import torch
        import torch.distributed as dist

        flag = torch.tensor([1.0 if terminating() else 0.0], device=self.device)
        self._pending = (dist.all_reduce(flag, op=dist.ReduceOp.MAX, async_op=True), flag)
        return False

    def settle(self) -> bool:
        """The vote still travelling, waited for (after the epoch's last step: the next
        collective must find none pending); True if it says stop."""
        if self._pending is None:
            return self.distributed is False and terminating()
        work, flag = self._pending
        self._pending = None
        work.wait()
        return flag.item() > 0
