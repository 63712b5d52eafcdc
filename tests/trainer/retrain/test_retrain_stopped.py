"""A retrain's pod stopped (SIGTERM: deleted, drained, evicted) while its training job
trains: that job is the CronJob's and goes on, so the model's retrain slot stays held by it
and no other retrain creates a second training job beside it. The Kubernetes API is a
stand-in here (the cluster tier runs the real one): a dict of the training jobs."""

from __future__ import annotations

import types
from datetime import UTC, datetime

import pytest

from trainer.contract.layout import ModelKeys
from trainer.contract.lifecycle.retrain import (
    SCHEDULE,
    TRAINING,
    RetrainManifest,
    RetrainRecord,
    RetrainTrigger,
)
from trainer.retrain import cli
from trainer.retrain.jobs import Owner
from trainer.retrain.slot import Slot

NAME = "smallcnn-digits"
JOB = {"kind": "PyTorchJob", "apiVersion": "kubeflow.org/v1", "metadata": {},
       "spec": {"pytorchReplicaSpecs": {"Master": {"template": {"spec": {"containers": [
           {"name": "pytorch", "command": ["python", "-m", "trainer", "train"]}]}}}}}}


class Cluster:
    """The training jobs of the namespace; ``get`` is where the SIGTERM lands (the retrain
    polls its job), as the signal handler raises it."""

    kind, namespace = "PyTorchJob", "ns"
    ApiException = RuntimeError

    def __init__(self):
        self.jobs: dict[str, dict] = {}

    def create(self, body):
        self.jobs[body["metadata"]["name"]] = body
        return True

    def get(self, name):
        cli._terminated(15, None)

    def training(self, name):
        return name in self.jobs

    def job_running(self, job):
        return False  # the stopped retrain's own Job is gone

    def prune(self, *args):
        return []


def test_a_stopped_retrain_keeps_the_slot_while_its_training_job_trains(local_store):
    local_store.ensure_buckets()
    cluster = Cluster()
    manifest = RetrainManifest(NAME, "digits", "retrain-smallcnn-digits", JOB)
    origin = types.SimpleNamespace(
        name="job-a", manual=False, retrain_id="20261207T120000Z-aaaaaa",
        owner=Owner("batch/v1", "CronJob", "trainstack-retrain", "uid-1"),
        created=datetime(2026, 12, 7, 12, tzinfo=UTC))
    args = types.SimpleNamespace(source=None, source_env=None, dataset=None,
                                 poll_seconds=0.01, keep=3)
    trigger = RetrainTrigger(origin.retrain_id, SCHEDULE, "")
    with pytest.raises(SystemExit):
        cli.retrain(args, local_store, cluster, manifest, origin, trigger)
    (training_job,) = cluster.jobs
    record = RetrainRecord.from_json(local_store.get_bytes(ModelKeys(NAME).retrain(trigger.id)))
    assert (record.state, record.training_job) == (TRAINING, training_job)
    # The next retrain finds the slot held by a training job that still trains.
    successor = Slot(local_store, NAME, "20261207T130000Z-bbbbbb", "job-b",
                     cli._holder_running(cluster))
    held = successor.take()
    assert held is not None and held.training_job == training_job
    # Once that job ended, the successor takes the slot.
    del cluster.jobs[training_job]
    assert successor.take() is None
