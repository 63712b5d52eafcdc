"""A retrain's training job made from the stack's manifest (trainer.retrain.jobs): the
stack's spec, a name per retrain, its labels, the CronJob as owner, the retrain's
arguments on every training command; the end read from either operator's conditions."""

from __future__ import annotations

import copy

import pytest

from tests.infra.infra_helpers import PUSHED, one, pytorchjob
from tests.infra.render import render
from trainer.contract.lifecycle.retrain import (
    ID_LABEL,
    MODEL_LABEL,
    RetrainManifest,
    RetrainTrigger,
)
from trainer.retrain.jobs import Owner, ended, job_name, training_job

OWNER = Owner("batch/v1", "CronJob", "trainstack-retrain", "0d7e-uid")
TRIGGER = RetrainTrigger("20261207T120000Z-abc123", "drift", "metrics/m/monitoring/r.json")


def manifest(config: dict) -> RetrainManifest:
    rendering = render({**PUSHED, "retrainSchedule": "@daily", **config})
    return RetrainManifest.from_json(
        rendering.objects["ConfigMap/trainstack-retrain"]["data"]["manifest.json"]), rendering


@pytest.mark.parametrize("config", [{"workers": "3"}, {"trainingApi": "trainjob"}])
def test_the_training_job_is_the_stacks_with_the_retrains_arguments(config):
    made, rendering = manifest(config)
    job = training_job(made, TRIGGER, OWNER, "trainstack")
    stack = (one(rendering, "TrainJob") if config.get("trainingApi") else pytorchjob(rendering))
    meta = job["metadata"]
    assert meta["name"] == job_name(made, TRIGGER.id) == job_name(made, TRIGGER.id)
    assert meta["name"].startswith("retrain-resnet18-cifar10-") and len(meta["name"]) <= 45
    assert meta["labels"][MODEL_LABEL] == "resnet18-cifar10" and meta["labels"][ID_LABEL] == \
        TRIGGER.id
    assert meta["ownerReferences"] == [{"apiVersion": "batch/v1", "kind": "CronJob",
                                        "name": "trainstack-retrain", "uid": "0d7e-uid",
                                        "controller": False}]
    retrain_args = ["--retrain-id", TRIGGER.id, "--retrain-reason", "drift",
                    "--retrain-report", TRIGGER.report]
    expected = copy.deepcopy(stack["spec"])
    if job["kind"] == "TrainJob":
        expected["trainer"]["command"] += retrain_args
    else:
        for replica in expected["pytorchReplicaSpecs"].values():
            replica["template"]["spec"]["containers"][0]["command"] += retrain_args
    assert job["spec"] == expected
    assert made.job["spec"] == stack["spec"], "the manifest is not changed in place"


def test_two_retrains_get_two_names():
    made, _ = manifest({})
    other = RetrainTrigger("20261207T120000Z-def456", "person")
    assert job_name(made, TRIGGER.id) != job_name(made, other.id)


def test_a_manifest_without_a_training_container_is_refused():
    made, _ = manifest({})
    broken = copy.deepcopy(made.job)
    for replica in broken["spec"]["pytorchReplicaSpecs"].values():
        replica["template"]["spec"]["containers"][0]["name"] = "sidecar"
    with pytest.raises(ValueError, match="no training container"):
        training_job(RetrainManifest(made.name, made.dataset, made.prefix, broken), TRIGGER,
                     OWNER, "trainstack")


@pytest.mark.parametrize(("conditions", "outcome"), [
    ([], None),
    ([{"type": "Running", "status": "True"}], None),
    ([{"type": "Succeeded", "status": "True", "message": "done"}], True),
    ([{"type": "Complete", "status": "True"}], True),  # Trainer v2
    ([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}], False),
    ([{"type": "Failed", "status": "False"}], None),
])
def test_the_end_of_either_kind_is_read_from_its_conditions(conditions, outcome):
    found = ended({"kind": "PyTorchJob", "status": {"conditions": conditions}})
    assert (found[0] if found else None) == outcome
