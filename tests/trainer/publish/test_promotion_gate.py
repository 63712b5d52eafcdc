"""The promotion gate, with real training runs (`python -m trainer train` processes).

A version trained to be worse (one epoch, a tiny learning rate) is published as a
candidate and latest.json stays on the better one; a better one is promoted; `python -m
trainer promote` serves a candidate and rolls back; `promotionGate off` is today's
behaviour; a changed dataset has the served version evaluated again on the new split.
"""

from __future__ import annotations

import io
import json

import pytest
import torch

from tests.trainer.cifar_fixtures import make_batches, write_archive
from tests.trainer.trainer_procs import events, run_trainer, trainer_env
from trainer.contract.errors import CONFIG_EXIT
from trainer.contract.layout import MODEL_FILE, ModelKeys
from trainer.contract.lifecycle.promotion import GATE_ENV, TOLERANCE_ENV, passes
from trainer.contract.records import Latest
from trainer.contract.schema import VersionMeta
from trainer.data.augment import Normalizer
from trainer.data.loading import load_dataset

pytestmark = pytest.mark.slow

NAME = "smallcnn-digits"
KEYS = ModelKeys(NAME)
DIGITS = ["--dataset", "digits", "--model", "smallcnn", "--batch-size", "32"]
GOOD = [*DIGITS, "--epochs", "3", "--lr", "0.05"]
WORSE = [*DIGITS, "--epochs", "1", "--lr", "0.0001"]  # a tiny step: barely trained
BETTER = [*DIGITS, "--epochs", "6", "--lr", "0.05"]


@pytest.fixture(autouse=True)
def buckets(local_store):
    local_store.ensure_buckets()


def train(store, flags: list[str], env: dict[str, str] | None = None) -> str:
    done = run_trainer(["train", "--store", str(store.root), *flags], trainer_env(env))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (finished,) = events(done.stdout + done.stderr, "done")
    return finished["version"]


def meta(store, version: str, name: str = NAME) -> VersionMeta:
    return VersionMeta.from_json(store.get_bytes(ModelKeys(name).meta(version)))


def latest(store, name: str = NAME) -> Latest:
    return Latest.from_json(store.get_bytes(ModelKeys(name).latest))


def promote(store, version: str, name: str = NAME):
    return run_trainer(["promote", "--store", str(store.root), "--model", name,
                        "--version", version], trainer_env())


def test_a_worse_version_waits_as_a_candidate_until_a_person_promotes_it(local_store):
    good = train(local_store, GOOD)
    first = meta(local_store, good).promotion
    assert first.decision == "promoted" and "first version" in first.reason
    assert latest(local_store).promoted_by == "gate"

    worse = train(local_store, WORSE)
    verdict = meta(local_store, worse).promotion
    assert verdict.decision == "candidate", verdict
    assert verdict.against == good and not verdict.reevaluated
    assert verdict.current_acc == meta(local_store, good).metrics.test_acc
    assert verdict.candidate_acc == meta(local_store, worse).metrics.test_acc
    assert verdict.candidate_acc * 100 < verdict.current_acc * 100 - verdict.tolerance
    assert verdict.split == meta(local_store, good).data_fingerprint
    assert "by more than the tolerance of 1 percentage points" in verdict.reason
    assert latest(local_store).version == good, "the app must keep serving the better one"

    better = train(local_store, BETTER)
    promoted = meta(local_store, better).promotion
    assert promoted.candidate_acc >= promoted.current_acc, "the test's better run is not better"
    assert promoted.decision == "promoted" and promoted.against == good
    before = latest(local_store)
    assert (before.version, before.promoted_by) == (better, "gate")

    # A person serves the candidate: a new sequence, latest.json names it.
    done = promote(local_store, worse)
    assert done.returncode == 0, done.stderr[-2000:]
    pinned = latest(local_store)
    assert (pinned.version, pinned.promoted_by) == (worse, "person")
    assert pinned.sequence > before.sequence
    assert pinned.version_sequence == meta(local_store, worse).sequence
    # ... and rolls back to the better one the same way.
    assert promote(local_store, better).returncode == 0
    back = latest(local_store)
    assert back.version == better and back.sequence > pinned.sequence

    # The next publication is judged against what the person chose.
    again = train(local_store, [*WORSE, "--seed", "1"])
    assert meta(local_store, again).promotion.against == better
    assert latest(local_store).version == better


def test_promote_names_what_is_wrong_in_one_line(local_store):
    train(local_store, WORSE)
    done = promote(local_store, "20990101T000000Z-nosuchrun0")
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "has no complete version" in errors[0], done.stderr
    assert "Traceback" not in done.stderr


def test_gate_off_serves_what_was_published_last_exactly_as_before(local_store):
    off = {GATE_ENV: "off"}
    train(local_store, GOOD, off)
    worse = train(local_store, WORSE, off)
    assert latest(local_store).version == worse
    raw = json.loads(local_store.get_bytes(KEYS.latest))
    assert set(raw) == {"version", "sequence"}, raw
    assert "promotion" not in json.loads(local_store.get_bytes(KEYS.meta(worse)))


def test_a_bad_tolerance_stops_the_run_before_it_trains(local_store):
    done = run_trainer(["train", "--store", str(local_store.root), *WORSE],
                       trainer_env({TOLERANCE_ENV: "-1"}))
    assert done.returncode == CONFIG_EXIT  # a configuration error: no restart helps
    errors = [line for line in done.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and TOLERANCE_ENV in errors[0] and "0 to 100" in errors[0]
    assert not events(done.stdout + done.stderr, "epoch")


def accuracy_of(store, name: str, version: str, bundle) -> float:
    """``version``'s program on ``bundle``'s test split, computed here independently."""
    served = meta(store, version, name)
    program = torch.export.load(io.BytesIO(store.get_bytes(
        ModelKeys(name).version_file(version, MODEL_FILE)))).module()
    with torch.inference_mode():
        logits = program(Normalizer(served.mean, served.std)(bundle.test.images))
    return (logits.argmax(1) == bundle.test.labels).float().mean().item()


def test_a_changed_dataset_has_the_served_version_evaluated_on_the_new_split(local_store,
                                                                           tmp_path):
    name, flags = "smallcnn-cifar10", ["--dataset", "cifar10", "--model", "smallcnn",
                                       "--epochs", "2", "--batch-size", "32", "--lr", "0.05"]
    for seed in (0, 1):  # the source changes: other images, another fingerprint
        archive = write_archive(tmp_path / f"cifar-{seed}.tar.gz", make_batches(40, seed=seed))
        done = run_trainer(["ingest", "--store", str(local_store.root), "--dataset", "cifar10",
                            "--source", str(archive)], trainer_env())
        assert done.returncode == 0, done.stderr[-2000:]
        if seed == 0:
            first = train(local_store, flags)
    second = train(local_store, flags)
    new_split = load_dataset("cifar10", local_store)
    verdict = meta(local_store, second, name).promotion
    assert verdict.against == first and verdict.reevaluated
    assert verdict.split == new_split.fingerprint != meta(local_store, first, name).data_fingerprint
    assert verdict.current_acc == pytest.approx(accuracy_of(local_store, name, first, new_split),
                                                abs=1e-6)
    assert verdict.candidate_acc == pytest.approx(
        accuracy_of(local_store, name, second, new_split), abs=1e-6)
    assert verdict.decision == ("promoted" if passes(verdict.candidate_acc, verdict.current_acc,
                                                     verdict.tolerance) else "candidate")
    served = latest(local_store, name).version
    assert served == (second if verdict.decision == "promoted" else first)


def test_a_version_judged_against_a_replaced_one_is_not_moved_to(local_store):
    """Two publications at once: B and C were both compared with A; C moved first. B,
    published after C (a higher sequence), would have moved under the old rule; it was
    never compared with C, so latest.json stays on C and B waits for a person."""
    from tests.inference.modelkit import MODEL_NAME, publish_version
    from trainer.contract.lifecycle.promotion import PROMOTED, Promotion

    def passed(against: str) -> Promotion:
        return Promotion(PROMOTED, "a test's verdict", against=against, candidate_acc=0.9,
                         current_acc=0.9, split="sha256:colours")

    a = publish_version(local_store, "20261207T100000Z", promotion=passed(""))
    c = publish_version(local_store, "20261207T100002Z", promotion=passed(a))
    b = publish_version(local_store, "20261207T100001Z", promotion=passed(a))
    b_meta = meta(local_store, b, MODEL_NAME)
    assert b_meta.sequence > meta(local_store, c, MODEL_NAME).sequence
    assert latest(local_store, MODEL_NAME).version == c
