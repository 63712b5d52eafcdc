"""Issue 30 on the real control plane: a retrain by hand (`kubectl create job
--from=cronjob/trainstack-retrain`) is admitted under Pod Security restricted, creates the
PyTorchJob owned by the CronJob, whose pods the real Training Operator made, run here as
local processes, train and publish through the promotion gate; a second retrain by hand
while the first trains trains nothing; deleting the CronJob (as `pulumi destroy` does)
removes every Job, training job and pod it made. The drift CronJob starts a retrain when
the served version's newest drift checks found drift, once per report, naming it."""

from __future__ import annotations

from infra.workloads.retrain import CRONJOB, DRIFT_CRONJOB
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
from trainer.contract.lifecycle.monitoring import DriftReport
from trainer.contract.lifecycle.retrain import FINISHED, SKIPPED, RetrainRecord
from trainer.contract.schema import VersionMeta

NAMESPACE = "retrain-run"
MODEL = "smallcnn-digits"
# Never due while the test runs (January 1st, 03:00 UTC): only retrains by hand.
CONFIG = {**PYTORCHJOB, "namespace": NAMESPACE, "epochs": "2",
          "retrainSchedule": "0 3 1 1 *"}


def drift_report(s3_store, version: str, minute: int) -> str:
    """A drift check of ``version`` that found drift, as the app writes it."""
    key = ModelKeys(MODEL).report(version, f"20261207T12{minute:02d}00000000Z-app-0")
    s3_store.put_bytes(key, DriftReport(
        model=MODEL, version=version, checked_at="2026-12-07T12:00:00Z", n=256, drift=True,
        estimated_accuracy=0.5, test_accuracy=0.9, alpha=0.01, tests={}).to_json())
    return key


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

    # 5. Drift: two drift checks in a row of the served version start a retrain, once.
    drift = render({**CONFIG, "monitoring": "prometheus-operator", "retrainOnDrift": "true",
                    "driftAlertWindows": "2"})
    cp.apply([drift.objects[f"CronJob/{DRIFT_CRONJOB}"]])
    report = [drift_report(s3_store, done["version"], minute) for minute in (1, 2)][-1]
    cluster = local_cluster(drift, tmp_path / "pods-drift", s3_endpoint)
    retrain_by_hand(cp, NAMESPACE, "drift-check-1", DRIFT_CRONJOB)
    check = retrain_process(cluster, job_pod(cp, NAMESPACE, "drift-check-1"), kubeconfig)
    running = check.start(logs)
    try:
        made = cp.wait_for("the drift retrain's PyTorchJob", lambda: [
            j for j in training_jobs(cp, NAMESPACE, "pytorchjob", MODEL)
            if j["metadata"]["name"] != name], timeout_s=WAIT_S, namespace=NAMESPACE)[0]
        command = made["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"][
            "containers"][0]["command"]
        assert command[-4:] == ["--retrain-reason", "drift", "--retrain-report", report]
        pods_succeeded(cp, NAMESPACE, operator_pods(cp, NAMESPACE, made["metadata"]["name"], 2))
        assert running.wait(timeout=WAIT_S) == 0, log_of(logs, check)
    finally:
        stop([running])
    assert records(s3_store)["drift-check-1"].report == report
    retrain_by_hand(cp, NAMESPACE, "drift-check-2", DRIFT_CRONJOB)  # the same reports again
    again = retrain_process(cluster, job_pod(cp, NAMESPACE, "drift-check-2"), kubeconfig)
    assert again.start(logs).wait(timeout=WAIT_S) == 0, log_of(logs, again)
    assert f"report {report} started retrain" in log_of(logs, again)
    assert len(training_jobs(cp, NAMESPACE, "pytorchjob", MODEL)) == 2

    # 6. `pulumi destroy` deletes the CronJobs: every Job, training job and pod they made goes.
    for cronjob_name in (CRONJOB, DRIFT_CRONJOB):
        delete_as_pulumi(cp, drift.objects[f"CronJob/{cronjob_name}"])
    jobs = "retrain-by-hand-1,retrain-by-hand-2,drift-check-1,drift-check-2"
    cp.wait_for("the retrains' jobs and pods to be gone", lambda: gone(
        cp, NAMESPACE, ("jobs", f"{JOB_LABEL} in ({jobs})"), ("pods", f"{JOB_LABEL} in ({jobs})"),
        ("pytorchjob", f"retrain.trainstack.io/model={MODEL}"),
        ("pods", f"{PYTORCHJOB_LABEL}={name}"),
        ("pods", f"{PYTORCHJOB_LABEL}={made['metadata']['name']}")),
        timeout_s=WAIT_S, namespace=NAMESPACE)
