"""Issue 30 on the real control plane: a retrain by hand (`kubectl create job
--from=cronjob/trainstack-retrain`) is admitted under Pod Security restricted, creates the
PyTorchJob owned by the CronJob, whose pods the real Training Operator made, run here as
local processes, train and publish through the promotion gate; a second retrain by hand
while the first trains trains nothing; deleting the CronJob (as `pulumi destroy` does)
removes every Job, training job and pod it made."""

from __future__ import annotations

from infra.workloads.retrain import CRONJOB
from tests.cluster.retrain_kit import (
    JOB_LABEL,
    account_kubeconfig,
    gone,
    job_pod,
    pods_succeeded,
    retrain_by_hand,
    retrain_process,
    this_checkout,
    training_jobs,
)
from tests.cluster.runs_kit import local_cluster, log_of, run_buckets
from tests.cluster.stack_apply import apply_stack, delete_as_pulumi, volumes_for
from tests.cluster.test_pytorchjob_runs import (
    JOB_LABEL as PYTORCHJOB_LABEL,
)
from tests.cluster.test_pytorchjob_runs import (
    PYTORCHJOB,
    local_ranks,
    operator_pods,
)
from tests.infra.render import render
from tests.testkit import WAIT_S, stop
from tests.trainer.trainer_procs import events
from trainer.contract.layout import ModelKeys
from trainer.contract.retrain import FINISHED, SKIPPED, RetrainRecord
from trainer.contract.schema import VersionMeta

NAMESPACE = "retrain-run"
MODEL = "smallcnn-digits"
# Never due while the test runs (January 1st, 03:00 UTC): only retrains by hand.
CONFIG = {**PYTORCHJOB, "namespace": NAMESPACE, "epochs": "2",
          "retrainSchedule": "0 3 1 1 *"}


def records(s3_store) -> dict[str, RetrainRecord]:
    keys = ModelKeys(MODEL)
    found = [RetrainRecord.from_json(s3_store.get_bytes(k)) for k in s3_store.list(keys.retrains)]
    return {r.job: r for r in found}


def test_a_retrain_by_hand_trains_a_run_owned_by_the_cronjob(storage, s3_store, s3_endpoint,
                                                            tmp_path):
    cp, logs = storage, tmp_path / "logs"
    logs.mkdir()
    rendering = render(CONFIG)
    cp.apply(volumes_for(rendering))
    apply_stack(cp, rendering)
    cluster = local_cluster(rendering, tmp_path / "pods", s3_endpoint)
    run_buckets(cluster, logs)
    cronjob = cp.get("cronjob", CRONJOB, "-n", NAMESPACE)
    kubeconfig = account_kubeconfig(cp, NAMESPACE, tmp_path / "retrain.kubeconfig")

    # 1. A person starts a retrain: its Job is the CronJob's, its pod admitted (restricted).
    job = retrain_by_hand(cp, NAMESPACE, "retrain-by-hand-1")
    (owner,) = job["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"]) == ("CronJob", cronjob["metadata"]["uid"])
    first = retrain_process(cluster, job_pod(cp, NAMESPACE, "retrain-by-hand-1"),
                            kubeconfig).start(logs)
    procs = [first]
    try:
        # 2. It creates the PyTorchJob, owned by the CronJob (not by the retrain's Job).
        (made,) = cp.wait_for("the retrain's PyTorchJob",
                              lambda: training_jobs(cp, NAMESPACE, "pytorchjob", MODEL),
                              timeout_s=WAIT_S, namespace=NAMESPACE)
        name = made["metadata"]["name"]
        assert made["metadata"]["ownerReferences"] == [{
            "apiVersion": "batch/v1", "kind": "CronJob", "name": CRONJOB,
            "uid": cronjob["metadata"]["uid"], "controller": False}]
        pods = operator_pods(cp, NAMESPACE, name, 2)
        ranks = [this_checkout(rank) for rank in local_ranks(cluster, pods, name)]
        procs += [rank.start(logs) for rank in ranks]

        # 3. A second retrain by hand while it trains: it ends at once and trains nothing.
        retrain_by_hand(cp, NAMESPACE, "retrain-by-hand-2")
        second = retrain_process(cluster, job_pod(cp, NAMESPACE, "retrain-by-hand-2"),
                                 kubeconfig)
        assert second.start(logs).wait(timeout=WAIT_S) == 0, log_of(logs, second)
        assert "this retrain trains nothing" in log_of(logs, second)
        assert [j["metadata"]["name"] for j in training_jobs(
            cp, NAMESPACE, "pytorchjob", MODEL)] == [name]

        # 4. The operator's pods train the retrain's run and publish it through the gate.
        for proc, rank in zip(procs[1:], ranks, strict=True):
            assert proc.wait(timeout=WAIT_S * 2) == 0, log_of(logs, rank)
        (done,) = events(log_of(logs, ranks[0]), "done")
        meta = VersionMeta.from_json(s3_store.get_bytes(ModelKeys(MODEL).meta(done["version"])))
        assert meta.retrain.reason == "person" and meta.train_config["retrain_id"]
        assert meta.promotion.decision == "promoted"  # the model's first version
        # The kubelet reports the pods done; the operator ends the job; the retrain ends.
        pods_succeeded(cp, NAMESPACE, pods)
        assert first.wait(timeout=WAIT_S) == 0, log_of(logs, procs[0])
    finally:
        stop(procs)
    found = records(s3_store)
    assert found["retrain-by-hand-1"].state == FINISHED
    assert found["retrain-by-hand-1"].training_job == name
    assert found["retrain-by-hand-2"].state == SKIPPED

    # 5. `pulumi destroy` deletes the CronJob: every Job, training job and pod it made goes.
    delete_as_pulumi(cp, rendering.objects[f"CronJob/{CRONJOB}"])
    cp.wait_for("the retrains' jobs and pods to be gone", lambda: gone(
        cp, NAMESPACE, ("jobs", f"{JOB_LABEL} in (retrain-by-hand-1,retrain-by-hand-2)"),
        ("pods", f"{JOB_LABEL} in (retrain-by-hand-1,retrain-by-hand-2)"),
        ("pytorchjob", f"retrain.trainstack.io/model={MODEL}"),
        ("pods", f"{PYTORCHJOB_LABEL}={name}")), timeout_s=WAIT_S, namespace=NAMESPACE)
