"""Issue 20 #6: one job trains a run at a time (trainer.lease), judged without trusting
pods' wall clocks: a live holder renews, a dead one's lease is taken over once its record
stayed unchanged for ttl_s by the waiter's own clock, a released one at once."""

from __future__ import annotations

import pytest

from trainer.layout import ModelKeys
from trainer.lease import RunLease, RunLeaseHeld, RunLeaseLost
from trainer.schema import RunLeaseRecord

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


def lease(store, place: str, time: FakeTime | None = None, ttl_s: float = 60.0) -> RunLease:
    store.ensure_buckets()
    time = time or FakeTime()
    return RunLease(store, NAME, RUN, ttl_s=ttl_s, place=place, clock=time.clock,
                    sleep=time.sleep)


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


def test_a_successor_in_the_same_place_takes_over_at_once(local_store):
    """The operator restarted the Master in place (same pod): its predecessor is gone."""
    lease(local_store, "trainstack-train-master-0").acquire(wait_s=1)
    time = FakeTime()
    lease(local_store, "trainstack-train-master-0", time).acquire(wait_s=1)
    assert time.now == 1000.0


def test_bad_settings_are_config_errors_naming_them(local_store, monkeypatch):
    from trainer.errors import ConfigError

    monkeypatch.setenv("TRAINSTACK_LEASE_TTL_S", "soon")
    with pytest.raises(ConfigError, match=r"TRAINSTACK_LEASE_TTL_S: must be a number of "
                       r"seconds > 0, got 'soon'"):
        RunLease(local_store, NAME, RUN)


def test_a_local_run_whose_process_exited_is_taken_over_at_once(local_store):
    """Outside a cluster the place is host:pid: a killed local run's lease is free as soon
    as its process is gone (here: a pid that cannot exist), without waiting for ttl_s."""
    import socket

    lease(local_store, f"{socket.gethostname()}:{2**22 + 7}").acquire(wait_s=1)
    time = FakeTime()
    lease(local_store, "elsewhere", time).acquire(wait_s=1)
    assert time.now == 1000.0 and record(local_store).place == "elsewhere"


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
