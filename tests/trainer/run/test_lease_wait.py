"""Issue 28 #7: a Master that waited for the run's lease acts on what the store holds once
it has the lease, not on what it saw before it waited."""

from __future__ import annotations

import logging

import pytest

from tests.trainer.runs import identity_of
from trainer.contract.config import TrainConfig
from trainer.contract.errors import StoreError
from trainer.contract.layout import ModelKeys
from trainer.run.train import run_training
from trainer.state.checkpoint import all_checkpoints
from trainer.store.lease import RunLease

pytestmark = pytest.mark.slow

CFG = TrainConfig(dataset="digits", model="smallcnn", epochs=1, batch_size=64, lr=0.05, seed=5)


class WhileItWaits(logging.Handler):
    """Runs ``meanwhile`` once, when the waiting job first says it waits: what another job
    does while this one sleeps between its reads of the lease."""

    def __init__(self, meanwhile):
        super().__init__()
        self.meanwhile, self.ran = meanwhile, False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.ran and "waiting for it" in record.getMessage():
            self.ran = True
            self.meanwhile()


def versions_of(store, keys: ModelKeys) -> list[str]:
    return [v for k in store.list(keys.versions) if (v := keys.version_of_meta_key(k))]


def trained_unpublished(store) -> tuple[ModelKeys, str]:
    """A run trained to its final checkpoint whose publication failed."""
    store.ensure_buckets()
    keys, run_id = ModelKeys(CFG.model_name), identity_of(CFG).run_id
    versions_dir = store.root / "models" / CFG.model_name / "versions"
    versions_dir.parent.mkdir(parents=True)
    versions_dir.write_text("in the way\n")  # trained, but its publication fails
    with pytest.raises((StoreError, OSError)):  # as the local store reports it
        run_training(CFG, store)
    versions_dir.unlink()
    assert [key for _, key in all_checkpoints(store, CFG.model_name, run_id)] == [
        keys.checkpoint(run_id, 1)]
    return keys, run_id


def wait_while(other: RunLease, meanwhile) -> str | None:
    """This job's run_training while ``other`` holds the lease and, once this job waits,
    does ``meanwhile`` and releases it."""
    def then_release() -> None:
        other.release()
        meanwhile()

    handler = WhileItWaits(then_release)
    logging.getLogger("trainer.store.lease").addHandler(handler)
    try:
        return run_training(CFG, other.store)
    finally:
        logging.getLogger("trainer.store.lease").removeHandler(handler)
        if not handler.ran:
            pytest.fail("this job never waited for the lease")


def test_a_master_that_waited_while_another_published_finishes_that_publication(
        local_store, monkeypatch):
    """B finds the run trained (its final checkpoint) and waits for the lease while A
    publishes it and drops its checkpoints. Before, B then loaded the checkpoint it had
    seen: ObjectNotFound .../epoch-0001.pt, a failed Master (with backoffLimit 0, the job)."""
    keys, run_id = trained_unpublished(local_store)
    monkeypatch.setenv("TRAINSTACK_LEASE_TTL_S", "0.4")  # B reads the lease every 0.1 s
    other = RunLease(local_store, CFG.model_name, run_id, place="job-a")
    other.acquire(wait_s=1)
    published = []
    version = wait_while(other, lambda: published.append(run_training(CFG, local_store)))
    assert version == published[0]
    assert versions_of(local_store, keys) == [version]
    assert all_checkpoints(local_store, CFG.model_name, run_id) == []


def test_a_master_that_waited_while_the_run_was_deleted_says_so(local_store, monkeypatch):
    keys, run_id = trained_unpublished(local_store)
    monkeypatch.setenv("TRAINSTACK_LEASE_TTL_S", "0.4")
    other = RunLease(local_store, CFG.model_name, run_id, place="job-a")
    other.acquire(wait_s=1)
    with pytest.raises(StoreError, match=rf"run {run_id}: its final checkpoint "
                       r".*epoch-0001.pt is gone and no version of it is published"):
        wait_while(other, lambda: local_store.delete(keys.checkpoint(run_id, 1)))
