"""Issue 20 #6: one job trains a run at a time (trainer.store.lease), judged without trusting
pods' wall clocks: a live holder renews, a dead one's lease is taken over once its record
stayed unchanged for ttl_s by the waiter's own clock, a released one at once."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

from trainer.contract.errors import StoreError
from trainer.contract.layout import ModelKeys
from trainer.contract.records import RunLeaseRecord
from trainer.store.lease import RunLease, RunLeaseHeld, RunLeaseLost
from trainer.store.liveness import known_gone, process_identity

NAME, RUN = "smallcnn-digits", "0123456789"


class FakeTime:
    """A monotonic clock that moves only when the lease sleeps; ``during_sleep`` runs
    what the other job does meanwhile."""

    def __init__(self, during_sleep=None):
        self.now, self.during_sleep = 1000.0, during_sleep

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        if self.during_sleep:
            self.during_sleep()


def lease(store, place: str, time: FakeTime | None = None, ttl_s: float = 60.0,
          process: str | None = None) -> RunLease:
    store.ensure_buckets()
    time = time or FakeTime()
    return RunLease(store, NAME, RUN, ttl_s=ttl_s, place=place, process=process,
                    clock=time.clock, sleep=time.sleep)


@contextlib.contextmanager
def renewals_fail(store) -> Iterator[None]:
    """The store refuses every conditional write while the block runs (an outage the
    holder sees: its renewals fail with a StoreError)."""
    real_put = store.put_if_match

    def outage(key, data, tag):
        raise StoreError("connection refused")

    store.put_if_match = outage
    try:
        yield
    finally:
        store.put_if_match = real_put


def record(store) -> RunLeaseRecord:
    return RunLeaseRecord.from_json(store.get_bytes(ModelKeys(NAME).lease(RUN)))


def test_a_free_run_is_taken_and_a_release_frees_it_at_once(local_store):
    first = lease(local_store, "job-a")
    first.acquire(wait_s=1)
    assert record(local_store).place == "job-a"
    first.release()
    assert record(local_store).released
    second_time = FakeTime()
    lease(local_store, "job-b", second_time).acquire(wait_s=1)
    assert record(local_store).place == "job-b" and second_time.now == 1000.0  # no wait


def test_a_second_job_waits_while_the_holder_renews_then_stops_clearly(local_store, caplog):
    holder = lease(local_store, "job-a")
    holder.acquire(wait_s=1)
    waiter = lease(local_store, "job-b", FakeTime(during_sleep=holder.renew))
    with pytest.raises(RunLeaseHeld, match=rf"run {RUN} is being trained by another job "
                       r"\(job-a.*waited 300 s \(TRAINSTACK_LEASE_WAIT_S\) and stops"):
        waiter.acquire(wait_s=300)
    assert record(local_store).holder == holder.holder
    assert any("waiting for it" in r.getMessage() for r in caplog.records)
    holder.check()  # still its own


def test_a_dead_holders_lease_is_taken_after_ttl_of_the_waiters_own_clock(local_store):
    """The dead holder's wall clock said anything it liked ("since"); only the waiter's
    monotonic clock counts, from the moment it first saw the record."""
    dead = lease(local_store, "job-a")
    dead.acquire(wait_s=1)  # ...and it dies without releasing
    time = FakeTime()
    taker = lease(local_store, "job-b", time, ttl_s=60)
    taker.acquire(wait_s=600)
    assert record(local_store).place == "job-b"
    assert 60 <= time.now - 1000.0 <= 60 + 15  # about the ttl, not the whole wait
    dead.renew()  # the old holder wakes up: it learns it lost the run
    with pytest.raises(RunLeaseLost, match="another job took over its lease"):
        dead.check()
    taker.check()


def test_two_live_holders_in_the_same_place_do_not_take_over_from_each_other(local_store):
    """Issue 28 #6: a TrainJob replaced under the same name (its deletion runs in the
    background) or one job name in two namespaces: two live Masters with one pod name.
    Before, the second took the lease in 0.00 s from the first, which still renewed it and
    whose check() still passed, so both wrote the run."""
    holder = lease(local_store, "trainstack-train-master-0")
    holder.acquire(wait_s=1)
    time = FakeTime(during_sleep=holder.renew)
    second = lease(local_store, "trainstack-train-master-0", time)
    with pytest.raises(RunLeaseHeld, match="being trained by another job"):
        second.acquire(wait_s=300)
    assert time.now - 1000.0 >= 300
    assert record(local_store).holder == holder.holder
    holder.check()  # still its own


HOLD_THE_LEASE = """
import sys, time
from trainer.store import LocalStore
from trainer.store.lease import RunLease
held = RunLease(LocalStore(sys.argv[1]), sys.argv[2], sys.argv[3], ttl_s=60.0)
held.acquire(wait_s=1)
print("held", flush=True)
time.sleep(600)
"""


def test_a_restarted_master_takes_over_at_once_only_once_its_predecessor_exited(
        local_store, monkeypatch):
    """A Master killed (OOM, SIGKILL: no release) and started again in the same pod: while
    the predecessor lives it waits like any job; once its process is gone it takes over at
    once, without waiting for ttl_s. Here both run on this host in one pid namespace, the
    place the successor can see the predecessor's pid."""
    import signal
    import subprocess
    import sys

    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")  # place: the pod's name
    local_store.ensure_buckets()
    predecessor = subprocess.Popen([sys.executable, "-c", HOLD_THE_LEASE, str(local_store.root),
                                    NAME, RUN], env={**os.environ}, stdout=subprocess.PIPE,
                                   text=True)
    try:
        assert predecessor.stdout.readline() == "held\n"
        held_by = record(local_store)
        time = FakeTime()
        with pytest.raises(RunLeaseHeld):  # alive: the same place proves nothing
            lease(local_store, held_by.place, time).acquire(wait_s=30)
    finally:
        predecessor.send_signal(signal.SIGKILL)
        predecessor.wait(timeout=30)
    time = FakeTime()
    successor = lease(local_store, held_by.place, time)
    successor.acquire(wait_s=30)
    assert time.now == 1000.0 and record(local_store).holder == successor.holder


def test_a_holders_pid_now_used_by_another_process_is_known_gone(local_store):
    """Its pid reused (in a restarted container, pid 1 again): a process with that pid but
    another start time is not the holder."""
    boot, namespace, _, started = process_identity().split("/")
    reused = f"{boot}/{namespace}/{os.getpid()}/{int(started) - 1}"
    lease(local_store, "job-a", process=reused).acquire(wait_s=1)
    time = FakeTime()
    lease(local_store, "job-b", time).acquire(wait_s=30)
    assert time.now == 1000.0 and record(local_store).place == "job-b"


def test_a_holder_in_another_pid_namespace_or_boot_is_never_known_gone(local_store):
    boot, namespace, _, _ = process_identity().split("/")
    for elsewhere in (f"{boot}/pid:[1]/{2**22 + 7}/1", f"another-boot/{namespace}/{2**22 + 7}/1",
                      "", "garbage"):
        assert not known_gone(elsewhere), elsewhere
    assert not known_gone(process_identity())  # this very process: alive
    lease(local_store, "job-a", process=f"{boot}/pid:[1]/{2**22 + 7}/1").acquire(wait_s=1)
    with pytest.raises(RunLeaseHeld):
        lease(local_store, "job-b", FakeTime()).acquire(wait_s=30)


def test_an_exited_process_is_known_gone_reaped_or_not():
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    boot, namespace, _, _ = process_identity().split("/")
    with open(f"/proc/{child.pid}/stat") as stat:
        started = stat.read().rpartition(")")[2].split()[19]
    identity = f"{boot}/{namespace}/{child.pid}/{started}"
    assert not known_gone(identity)
    child.stdin.close()  # it exits; not yet reaped: a zombie
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
    assert known_gone(identity)
    child.wait()
    assert known_gone(identity)


def test_bad_settings_are_config_errors_naming_them(local_store, monkeypatch):
    from trainer.contract.errors import ConfigError

    monkeypatch.setenv("TRAINSTACK_LEASE_TTL_S", "soon")
    with pytest.raises(ConfigError, match=r"TRAINSTACK_LEASE_TTL_S: must be a number of "
                       r"seconds > 0, got 'soon'"):
        RunLease(local_store, NAME, RUN)


def test_a_live_holder_whose_hostname_and_pid_look_gone_is_not_taken_over(local_store):
    """Two containers with one hostname (or two pods of one name) sharing a store: the
    holder's ``host:pid`` names a pid that does not exist here, yet it is alive elsewhere.
    Before, it was taken over at once."""
    import socket

    holder = lease(local_store, f"{socket.gethostname()}:{2**22 + 7}")
    holder.acquire(wait_s=1)
    time = FakeTime(during_sleep=holder.renew)
    with pytest.raises(RunLeaseHeld, match="being trained by another job"):
        lease(local_store, "elsewhere", time).acquire(wait_s=120)
    holder.check()


def test_a_renewal_whose_retry_finds_its_own_write_keeps_the_lease(local_store):
    """S3Store._call (and urllib3 under minio) retries a conditional PUT after a timeout
    or a 5xx; when the first try did land, the retry's If-Match names the old tag and
    gets 412. Before: the holder took its own renewal for a takeover and stopped with
    RunLeaseLost, leaving nobody training the run."""
    holder = lease(local_store, "job-a")
    holder.acquire(wait_s=1)
    real_put = local_store.put_if_match

    def landed_then_412(key, data, tag):
        real_put(key, data, tag)  # the first try landed; its answer was lost
        return real_put(key, data, tag)  # the retry: PreconditionFailed

    local_store.put_if_match = landed_then_412
    assert holder.renew()
    local_store.put_if_match = real_put
    holder.check()  # still its own
    assert holder.renew() and record(local_store).holder == holder.holder
    holder.release()
    assert record(local_store).released


def test_a_holder_that_could_not_renew_for_ttl_writes_nothing_more(local_store):
    """A store outage seen by the holder only (a partition): after ttl_s of failed
    renewals a waiter takes the run over. Before, the holder learned it only at its next
    background renewal (up to ttl_s / 4 later) and in between its epoch's check passed,
    so it wrote a checkpoint of a run another job was training."""
    holder_time = FakeTime()
    holder = lease(local_store, "job-a", holder_time)
    holder.acquire(wait_s=1)
    with renewals_fail(local_store):
        for _ in range(4):  # every renewal of a whole ttl fails
            holder_time.now += 15
            assert holder.renew()  # an outage: not (yet) lost
    taker = lease(local_store, "job-b")
    taker.acquire(wait_s=600)  # the record stayed unchanged for ttl_s: taken over
    holder_time.now += 1  # the holder's epoch ends before its next renewal
    with pytest.raises(RunLeaseLost, match="another job took over its lease"):
        holder.check()
    taker.check()


def test_a_holder_still_cut_off_after_ttl_stops_and_one_renewed_goes_on(local_store):
    time = FakeTime()
    holder = lease(local_store, "job-a", time)
    holder.acquire(wait_s=1)
    with renewals_fail(local_store):
        time.now += 30
        holder.check()  # half a ttl without a renewal: still safely its own
        time.now += 31
        with pytest.raises(RunLeaseLost, match=r"could not be renewed for 61 s \(ttl 60 s\), "
                           "so another job may have taken the run over"):
            holder.check()
    holder.check()  # the store is back, nobody took it: goes on
    assert record(local_store).holder == holder.holder


def test_a_store_that_disagrees_with_itself_is_not_spun_on(local_store):
    """Reads say the lease is absent, conditional creates say it exists: before, acquire
    looped at full speed, never sleeping and never reaching its wait limit."""
    from trainer.contract.errors import ObjectNotFound, PreconditionFailed

    time = FakeTime()
    taker = lease(local_store, "job-a", time)

    def absent(key):
        raise ObjectNotFound(key)

    def exists(key, data):
        raise PreconditionFailed(key)

    local_store.get_tagged, local_store.put_if_absent = absent, exists
    with pytest.raises(RunLeaseHeld, match=r"conditional writes were refused in 30 s "
                       r"\(TRAINSTACK_LEASE_WAIT_S\) while reads showed it free"):
        taker.acquire(wait_s=30)
    assert 30 <= time.now - 1000.0 <= 30 + 15


def test_release_does_not_wait_for_a_renewal_stuck_in_the_store(local_store, caplog):
    """A deleted pod has 30 s before SIGKILL: a renewal hanging in a store call must not
    keep release (and the trainer's other exits) waiting; the lease expires instead."""
    import threading

    holder = lease(local_store, "job-a")
    holder.acquire(wait_s=1)
    real_put, entered, unblock = local_store.put_if_match, threading.Event(), threading.Event()

    def hangs(key, data, tag):
        entered.set()
        unblock.wait(30)
        return real_put(key, data, tag)

    local_store.put_if_match = hangs
    renewing = threading.Thread(target=holder.renew)
    renewing.start()
    assert entered.wait(10)
    holder.release(wait_s=0.2)
    assert any("lease not released (a renewal is still waiting" in r.getMessage()
               for r in caplog.records)
    unblock.set()
    renewing.join(10)
    assert not record(local_store).released  # it expires after ttl_s instead


def test_a_renewal_that_landed_but_was_reported_as_failed_keeps_the_lease(local_store):
    """S3Store._call gives up with StoreError after its last retry even when an earlier
    try landed (its answer lost to a network blip). The holder kept the old tag, so its
    next renewal got 412 and, its record's renewal count one behind the holder's, took
    its own write for a takeover: RunLeaseLost, and nobody trained the run."""
    from trainer.contract.errors import StoreError

    holder = lease(local_store, "job-a")
    holder.acquire(wait_s=1)
    real_put = local_store.put_if_match

    def landed_then_unreachable(key, data, tag):
        real_put(key, data, tag)  # landed...
        raise StoreError("put: unreachable")  # ...but every answer was lost

    local_store.put_if_match = landed_then_unreachable
    assert holder.renew()  # an outage, as far as the holder knows
    local_store.put_if_match = real_put
    assert holder.renew(), "its own earlier renewal was taken for another job's takeover"
    holder.check()
    assert record(local_store).holder == holder.holder
    holder.release()
    assert record(local_store).released


def test_a_check_does_not_wait_behind_a_renewal_stuck_in_the_store(local_store):
    """An unconfirmed lease makes check() renew at once; behind a background renewal that
    hangs in a store call (a client's timeouts and retries: minutes), it waited as long,
    with training stopped. Now it waits a bounded time and stops without writing."""
    import threading

    time = FakeTime()
    holder = lease(local_store, "job-a", time)
    holder.acquire(wait_s=1)
    real_put, entered, unblock = local_store.put_if_match, threading.Event(), threading.Event()

    def hangs(key, data, tag):
        entered.set()
        unblock.wait(30)
        return real_put(key, data, tag)

    local_store.put_if_match = hangs
    renewing = threading.Thread(target=holder.renew)
    renewing.start()
    try:
        assert entered.wait(10)
        time.now += 61  # no renewal confirmed for a whole ttl
        with pytest.raises(RunLeaseLost, match="could not be renewed for 61 s"):
            holder.check(wait_s=0.2)
        assert renewing.is_alive()  # the stuck renewal is still in the store call
    finally:
        unblock.set()
        renewing.join(10)
