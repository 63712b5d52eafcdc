"""Issue 30 on Kubeflow Trainer v2 (`trainingApi: trainjob`), on the real control plane: a
retrain by hand creates the TrainJob from the stack's manifest, owned by the CronJob; the
pods Trainer v2 and JobSet made of it, run here as local processes, train the retrain's
run and publish it; deleting the CronJob removes the TrainJob and its pods."""

from __future__ import annotations

import pytest

from infra.workloads import trainjob as tj
from infra.workloads.retrain import CRONJOB
from tests.cluster.retrain_kit import (
    account_kubeconfig,
    gone,
    job_pod,
    retrain_by_hand,
    retrain_process,
    this_checkout,
    training_jobs,
)
from tests.cluster.runs_kit import local_cluster, log_of, run_buckets
from tests.cluster.stack_apply import delete_as_pulumi
from tests.cluster.test_trainjob_runs import local_processes
from tests.cluster.trainjob_kit import CONFIG, apply_stack, installed, scheduled_pods
from tests.infra.render import render
from tests.testkit import WAIT_S, stop
from tests.trainer.trainer_procs import events
from trainer.contract.layout import ModelKeys
from trainer.contract.schema import VersionMeta

NAMESPACE = "retrain-trainjob"
MODEL = "smallcnn-digits"


@pytest.fixture(scope="module")
def trainer(control_plane, tmp_path_factory):
    return installed(control_plane, tmp_path_factory.mktemp("trainer-v2"))


def test_a_retrain_by_hand_trains_a_trainjob_owned_by_the_cronjob(trainer, s3_store,
                                                                s3_endpoint, tmp_path):
    cp, logs = trainer, tmp_path / "logs"
    logs.mkdir()
    rendering = render({**CONFIG, "namespace": NAMESPACE, "epochs": "2",
                        "retrainSchedule": "0 3 1 1 *"})
    apply_stack(cp, rendering)
    cluster = local_cluster(rendering, tmp_path / "pods", s3_endpoint)
    run_buckets(cluster, logs)
    cronjob = cp.get("cronjob", CRONJOB, "-n", NAMESPACE)
    kubeconfig = account_kubeconfig(cp, NAMESPACE, tmp_path / "retrain.kubeconfig")

    retrain_by_hand(cp, NAMESPACE, "retrain-trainjob-1")
    retrain = retrain_process(cluster, job_pod(cp, NAMESPACE, "retrain-trainjob-1"), kubeconfig)
    procs = [retrain.start(logs)]
    try:
        (made,) = cp.wait_for("the retrain's TrainJob",
                              lambda: training_jobs(cp, NAMESPACE, "trainjob", MODEL),
                              timeout_s=WAIT_S, namespace=NAMESPACE)
        name = made["metadata"]["name"]
        assert made["metadata"]["ownerReferences"] == [{
            "apiVersion": "batch/v1", "kind": "CronJob", "name": CRONJOB,
            "uid": cronjob["metadata"]["uid"], "controller": False}]
        assert made["spec"]["runtimeRef"]["name"] == tj.RUNTIME
        assert made["spec"]["trainer"]["numNodes"] == 2  # the stack's worker count
        ranks = [this_checkout(p) for p in local_processes(
            cluster, scheduled_pods(cp, NAMESPACE, name, 2))]
        assert all("--retrain-id" in p.argv for p in ranks)
        procs += [rank.start(logs) for rank in ranks]
        for proc, rank in zip(procs[1:], ranks, strict=True):
            assert proc.wait(timeout=WAIT_S * 2) == 0, log_of(logs, rank)
        (done,) = events(log_of(logs, ranks[0]), "done")
        meta = VersionMeta.from_json(s3_store.get_bytes(ModelKeys(MODEL).meta(done["version"])))
        assert meta.retrain.reason == "person"
        # kwok ends the JobSet's pods (a Job owns them): the TrainJob completes, the retrain too.
        assert procs[0].wait(timeout=WAIT_S) == 0, log_of(logs, retrain)
    finally:
        stop(procs)

    delete_as_pulumi(cp, rendering.objects[f"CronJob/{CRONJOB}"])
    cp.wait_for("the retrain's TrainJob and pods to be gone", lambda: gone(
        cp, NAMESPACE, ("trainjob", f"retrain.trainstack.io/model={MODEL}"),
        ("pods", f"{tj.JOBSET_NAME_LABEL}={name}"),
        ("jobs", "batch.kubernetes.io/job-name=retrain-trainjob-1")),
        timeout_s=WAIT_S, namespace=NAMESPACE)
