"""One retrain of a model at a time (trainer.retrain.slot), on both store implementations:
the slot is taken by conditional writes, kept across a restart of its holder, handed over
once released, and taken over from a holder the API server says is over."""

from __future__ import annotations

import threading

import pytest

from trainer.contract.layout import ModelKeys
from trainer.contract.lifecycle.retrain import RetrainSlot
from trainer.retrain.slot import Slot

NAME = "smallcnn-digits"


def running(*names: str):
    """The API server's answer, as a set of the retrains whose jobs still run."""
    return lambda held: held.retrain_id in names


NOBODY_RUNS = running()


def slot(store, retrain_id: str, alive=NOBODY_RUNS) -> Slot:
    return Slot(store, NAME, retrain_id, f"job-{retrain_id}", alive)


@pytest.fixture
def store(any_store):
    any_store.ensure_buckets()
    return any_store


def test_of_two_retrains_starting_at_once_one_trains(store):
    both = ("20261207T120000Z-aaaaaa", "20261207T120000Z-bbbbbb")
    together, holders = threading.Barrier(2), {}

    def take(retrain_id):
        together.wait()
        holders[retrain_id] = slot(store, retrain_id, running(*both)).take()

    threads = [threading.Thread(target=take, args=(r,)) for r in both]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [r for r, holder in holders.items() if holder is None]
    assert len(winners) == 1, holders
    (loser,) = set(both) - set(winners)
    assert holders[loser].retrain_id == winners[0]


def test_a_restarted_holder_keeps_its_slot_and_the_next_takes_it_once_released(store):
    first = slot(store, "20261207T120000Z-aaaaaa")
    assert first.take() is None
    first.note_training_job("retrain-smallcnn-digits-0a1b2c3d")
    again = slot(store, "20261207T120000Z-aaaaaa")  # its pod restarted
    assert again.take() is None and again.mine.training_job == first.mine.training_job
    second = slot(store, "20261207T130000Z-bbbbbb", running("20261207T120000Z-aaaaaa"))
    assert second.take().retrain_id == "20261207T120000Z-aaaaaa"
    first.release()
    assert second.take() is None
    held = RetrainSlot.from_json(store.get_bytes(ModelKeys(NAME).retrain_slot))
    assert (held.retrain_id, held.released) == ("20261207T130000Z-bbbbbb", False)


def test_a_holder_whose_job_ended_without_releasing_is_taken_over(store):
    assert slot(store, "20261207T120000Z-aaaaaa").take() is None  # then its pod was lost
    assert slot(store, "20261207T130000Z-bbbbbb", running()).take() is None


def test_a_released_holder_cannot_release_its_successor(store):
    first = slot(store, "20261207T120000Z-aaaaaa")
    first.take()
    second = slot(store, "20261207T130000Z-bbbbbb", running())
    assert second.take() is None  # took over a holder the API server says is over
    first.release()  # the first one's late release leaves the slot alone
    held = RetrainSlot.from_json(store.get_bytes(ModelKeys(NAME).retrain_slot))
    assert (held.retrain_id, held.released) == ("20261207T130000Z-bbbbbb", False)


def test_a_damaged_slot_holds_nobody(store):
    store.put_bytes(ModelKeys(NAME).retrain_slot, b"{not json")
    assert slot(store, "20261207T120000Z-aaaaaa").take() is None


def test_a_restarted_retrain_pod_sees_its_retrain_ended_and_does_nothing_again(store):
    from trainer.contract.lifecycle.retrain import FAILED, TRAINING, RetrainTrigger
    from trainer.retrain.slot import Records

    trigger = RetrainTrigger("20261207T120000Z-aaaaaa", "schedule")
    records = Records(store, NAME, trigger, "job-a", "2026-12-07T12:00:00Z")
    assert records.ended() is None
    records.write(TRAINING, "PyTorchJob retrain-x created", training_job="retrain-x")
    assert records.ended() is None
    records.write(FAILED, "PyTorchJob failed: BackoffLimitExceeded")
    again = Records(store, NAME, trigger, "job-a", "2026-12-07T12:00:00Z")  # a new pod
    ended = again.ended()
    assert ended.state == FAILED and ended.training_job == "retrain-x"
