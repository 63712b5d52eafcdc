"""One job trains a run at a time: the run's lease in the store (``ModelKeys.lease``).

Two jobs of one run at once (a GitOps tool that never prunes the old PyTorchJob, a manual
run, an operator retry at the wrong moment) would both train and publish two versions of
one run. Rank 0 takes the lease before training (and before publishing a trained run
alone) by a conditional write; a background thread renews it every quarter of its
``ttl_s``; an orderly exit (success, an error, SIGTERM) marks it released.

Clocks: a waiting job never compares its wall clock with the holder's. It watches the
record's tag: a lease whose tag has not changed for ``ttl_s`` by the waiter's own monotonic
clock belongs to a dead job and is taken over by a conditional write on that very tag (two
waiters cannot both win). So a crashed job's lease is free about a minute (the default
``ttl_s``) after its last renewal, a deleted job's too (a rescale). A released one is free
at once, as is one whose holder this job can see has exited (trainer.store.liveness: the
same pid namespace of the same machine, such as a local run started again). Where the
holder ran (a pod's name) proves nothing: two live jobs can share it.

While another job holds the lease and renews it, this job waits, logging every minute, up
to ``TRAINSTACK_LEASE_WAIT_S`` (600 s), then stops with :class:`RunLeaseHeld`. A holder
that finds its lease taken over (it could not renew for ``ttl_s``: a store outage)
stops with :class:`RunLeaseLost` at its next epoch instead of writing a checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

from trainer.contract.errors import (
    ConfigError,
    MetaError,
    ObjectNotFound,
    PreconditionFailed,
    StoreError,
    TrainstackError,
)
from trainer.contract.layout import ModelKeys
from trainer.contract.records import RunLeaseRecord
from trainer.store.base import Store
from trainer.store.liveness import known_gone, process_identity

log = logging.getLogger(__name__)

TTL_ENV, WAIT_ENV = "TRAINSTACK_LEASE_TTL_S", "TRAINSTACK_LEASE_WAIT_S"
DEFAULT_TTL_S, DEFAULT_WAIT_S = 60.0, 600.0
REPORT_EVERY_S = 60.0
RACE_BACKOFF_S = 0.5  # after a second lost race in a row, then longer each time
RELEASE_WAIT_S = 10.0  # for a renewal in flight: well inside a pod's 30 s grace period


class RunLeaseHeld(TrainstackError):
    """Another job trains the run and kept its lease alive for as long as this one waited."""


class RunLeaseLost(TrainstackError):
    """Another job took the lease over: this one must not write anything more of the run."""


def _seconds(env: str, default: float) -> float:
    raw = os.environ.get(env)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise ConfigError(f"{env}: must be a number of seconds > 0, got {raw!r}", key=env)
    return value


def this_place() -> str:
    """For people reading the record: the pod's name in a cluster (its hostname), else
    ``host:pid``."""
    host = socket.gethostname()
    return host if os.environ.get("KUBERNETES_SERVICE_HOST") else f"{host}:{os.getpid()}"


class RunLease:
    """Rank 0's lease on one run; see the module docstring."""

    def __init__(self, store: Store, name: str, run_id: str, *, ttl_s: float | None = None,
                 place: str | None = None, process: str | None = None,
                 clock=time.monotonic, sleep=time.sleep):
        self.store, self.key, self.run_id = store, ModelKeys(name).lease(run_id), run_id
        self.ttl_s = _seconds(TTL_ENV, DEFAULT_TTL_S) if ttl_s is None else ttl_s
        self.place = place or this_place()
        self.process = process_identity() if process is None else process
        self.holder = uuid.uuid4().hex
        self.clock, self.sleep = clock, sleep
        self._tag: str | None = None
        self._confirmed_at: float | None = None  # our clock when the last write began
        self._renewals = 0
        self._lost = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _record(self, released: bool = False) -> bytes:
        return RunLeaseRecord(run_id=self.run_id, holder=self.holder, place=self.place,
                              process=self.process, renewals=self._renewals,
                              ttl_s=self.ttl_s, released=released,
                              since=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")).to_json()

    # Taking it ----------------------------------------------------------------------
    def acquire(self, wait_s: float | None = None) -> None:
        """Take the lease, waiting while a live job holds it; RunLeaseHeld after ``wait_s``."""
        wait_s = _seconds(WAIT_ENV, DEFAULT_WAIT_S) if wait_s is None else wait_s
        start = self.clock()
        seen: tuple[str, float] | None = None  # (tag, when this process first saw it)
        reported: float | None = None
        lost_races = 0
        while True:
            current, tag = self._read()
            now = self.clock()
            if tag is None:
                if self._try(lambda: self.store.put_if_absent(self.key, self._record())):
                    return
                lost_races = self._after_a_lost_race(lost_races, start, wait_s)
                continue
            if seen is None or seen[0] != tag:
                seen = (tag, now)  # renewed (or first seen): its holder is alive
            if current is None or current.released or known_gone(current.process) \
                    or now - seen[1] >= current.ttl_s:
                why = self._why_free(current, now - seen[1])
                if self._try(lambda tag=tag: self.store.put_if_match(self.key, self._record(),
                                                                     tag)):
                    log.info("run %s: lease taken over (%s)", self.run_id, why)
                    return
                lost_races = self._after_a_lost_race(lost_races, start, wait_s)
                continue
            if now - start >= wait_s:
                raise RunLeaseHeld(
                    f"run {self.run_id} is being trained by another job ({current.place}, "
                    f"lease {self.key} renewed {current.renewals} times); this job waited "
                    f"{wait_s:g} s ({WAIT_ENV}) and stops without training. Delete the "
                    "duplicate job; this run's version is published by the one that holds it")
            if reported is None or now - reported >= REPORT_EVERY_S:
                log.warning("run %s is being trained by another job (%s): waiting for it "
                            "(up to %g s more)", self.run_id, current.place,
                            wait_s - (now - start))
                reported = now
            lost_races = 0  # only races lost in a row tell of a store that disagrees
            self.sleep(min(5.0, self.ttl_s / 4))

    def _after_a_lost_race(self, lost_races: int, start: float, wait_s: float) -> int:
        """Another job wrote first: read again at once, but not forever. A store whose
        reads and conditional writes disagree (a read says absent, the write says present)
        would otherwise spin here without sleeping and without ever reaching ``wait_s``."""
        lost_races += 1
        if lost_races > 1:
            if self.clock() - start >= wait_s:
                raise RunLeaseHeld(
                    f"run {self.run_id}: could not take its lease {self.key}: {lost_races} "
                    f"conditional writes were refused in {wait_s:g} s ({WAIT_ENV}) while "
                    "reads showed it free; the store answers reads and writes "
                    "inconsistently, or other jobs keep taking it. This job stops "
                    "without training")
            self.sleep(min(RACE_BACKOFF_S * lost_races, self.ttl_s / 4))
        return lost_races

    @staticmethod
    def _why_free(current: RunLeaseRecord | None, unchanged_s: float) -> str:
        if current is None:
            return "unreadable record"
        if current.released:
            return f"released by {current.place}"
        if unchanged_s >= current.ttl_s:
            return f"{current.place} did not renew it for {unchanged_s:.0f} s"
        return f"its process in {current.place} has exited"

    def _read(self) -> tuple[RunLeaseRecord | None, str | None]:
        try:
            data, tag = self.store.get_tagged(self.key)
        except ObjectNotFound:
            return None, None
        try:
            return RunLeaseRecord.from_json(data), tag
        except MetaError as e:
            log.warning("%s is unreadable (%s): taking it over", self.key, e)
            return None, tag

    def _try(self, write) -> bool:
        began = self.clock()
        try:
            self._tag = write()
        except PreconditionFailed:
            return False  # another job moved first: read again
        self._confirmed_at = began
        log.info("run %s: lease %s taken (%s)", self.run_id, self.key, self.place)
        return True

    # Keeping it ---------------------------------------------------------------------
    def start_renewing(self) -> None:
        self._thread = threading.Thread(target=self._renew_loop, name="run-lease", daemon=True)
        self._thread.start()

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl_s / 4):
            if not self.renew():
                return

    def renew(self, wait_s: float = -1) -> bool:
        """One renewal; False once the lease is lost (taken over by another job).
        ``wait_s``: how long to wait for a renewal already in flight (-1: as long as it
        takes); when that one does not end in time, nothing is written (True)."""
        if not self._lock.acquire(timeout=wait_s):
            return True
        try:
            return self._renew_holding_the_lock()
        finally:
            self._lock.release()

    def _renew_holding_the_lock(self) -> bool:
        """renew(), its lock held."""
        if self._lost or self._tag is None:
            return not self._lost
        for _ in range(2):  # a second write only after an earlier one of ours landed
            self._renewals += 1
            began = self.clock()
            try:
                self._tag = self.store.put_if_match(self.key, self._record(), self._tag)
                self._confirmed_at = began
                return True
            except PreconditionFailed:
                renewals, tag = self._own_record()
                if renewals is None:
                    self._lost = True
                    log.error("run %s: lease %s was taken over by another job",
                              self.run_id, self.key)
                    return False
                self._tag = tag
                if renewals == self._renewals:  # a retried PUT whose first try landed
                    self._confirmed_at = began
                    return True
                # An earlier renewal landed although the store reported it failed
                # (StoreError after its last retry): still ours, but when it landed is
                # unknown, so renew once more on its tag rather than trust it.
            except StoreError as e:  # an outage: the next renewal tries again
                log.warning("run %s: lease not renewed (%s)", self.run_id, e)
                return True
        return True

    def _own_record(self) -> tuple[int | None, str | None]:
        """(renewals, tag) of the record while it is still this holder's (a conditional PUT
        retried after a timeout or a 5xx fails with 412 when its first try landed, and one
        reported failed may have landed); (None, None) when another job's or unreadable."""
        try:
            current, tag = self._read()
        except StoreError:
            return None, None
        if current is not None and current.holder == self.holder and not current.released \
                and current.renewals <= self._renewals:
            return current.renewals, tag
        return None, None

    def check(self, wait_s: float = RELEASE_WAIT_S) -> None:
        """RunLeaseLost if another job took the lease over, or may have: a lease this job
        has not renewed for ``ttl_s`` by its own clock is one a waiter may take (it waits
        that long after seeing our last renewal), so it renews first and writes nothing
        unless that renewal is still its own."""
        if not self._lost and self._tag is not None and self._confirmed_at is not None \
                and self.clock() - self._confirmed_at >= self.ttl_s:
            # Not longer than RELEASE_WAIT_S behind a renewal stuck in the store: one that
            # does not end in time leaves the lease unconfirmed, and this job stops.
            self.renew(wait_s=wait_s)
            if not self._lost and self.clock() - self._confirmed_at >= self.ttl_s:
                raise RunLeaseLost(
                    f"run {self.run_id}: its lease {self.key} could not be renewed for "
                    f"{self.clock() - self._confirmed_at:.0f} s (ttl {self.ttl_s:g} s), so "
                    "another job may have taken the run over; this job stops without "
                    "writing (a restart resumes from the last checkpoint)")
        if self._lost:
            raise RunLeaseLost(f"run {self.run_id}: another job took over its lease "
                               f"({self.key}) while this one could not renew it; this job "
                               "stops without writing (the other one goes on)")

    def release(self, wait_s: float = RELEASE_WAIT_S) -> None:
        """An orderly exit: the next job takes the lease at once. Bounded: a renewal stuck
        in a store call must not eat a deleted pod's grace period (the lease then expires
        after ``ttl_s`` instead)."""
        self._stop.set()
        deadline = time.monotonic() + wait_s
        if self._thread is not None:
            self._thread.join(timeout=wait_s)
        if not self._lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            log.warning("run %s: lease not released (a renewal is still waiting for the "
                        "store); it expires in %g s", self.run_id, self.ttl_s)
            return
        try:
            if self._lost or self._tag is None:
                return
            try:
                self.store.put_if_match(self.key, self._record(released=True), self._tag)
                log.info("run %s: lease released", self.run_id)
            except StoreError as e:  # expires after ttl_s anyway
                log.warning("run %s: lease not released (%s); it expires in %g s",
                            self.run_id, e, self.ttl_s)
            self._tag = None
        finally:
            self._lock.release()


@contextlib.contextmanager
def run_lease(store: Store, name: str, run_id: str, is_main: bool) -> Iterator[RunLease | None]:
    """Rank 0's lease on the run, renewed in the background and released on the way out,
    SIGTERM included (a deleted job frees it at once); None on other ranks."""
    if not is_main:
        yield None
        return
    held = RunLease(store, name, run_id)
    held.acquire()
    held.start_renewing()
    previous = _exit_on_sigterm()
    try:
        yield held
    finally:
        held.release()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _exit_on_sigterm():
    """SIGTERM raises SystemExit, so ``finally`` blocks run; returns the old handler (None
    off the main thread, where no handler can be set, and where the process has a SIGTERM
    handler of its own: the trainer's stops after a checkpointed step, trainer.run.stopping)."""
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return None
    return signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
