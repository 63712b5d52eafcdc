"""Retraining from the stack (issue 30), under Pulumi's mocks: the retrain CronJobs, what
their pods may do, the training job manifest they create from, the promotion gate's
settings on the training pods, and the outputs that name them."""

from __future__ import annotations

import json

import pytest

from infra.workloads.retrain import BY_HAND_ONLY, CRONJOB, DRIFT_CHECKS, DRIFT_CRONJOB
from tests.infra.infra_helpers import PUSHED, env_of, one, pytorchjob
from tests.infra.render import render
from trainer.contract.env import NAMESPACE_ENV, RETRAIN_JOB_ENV
from trainer.contract.lifecycle.promotion import GATE_ENV, TOLERANCE_ENV
from trainer.contract.lifecycle.retrain import RetrainManifest

SCHEDULED = {**PUSHED, "retrainSchedule": "0 3 * * 0"}
ON_DRIFT = {**PUSHED, "monitoring": "prometheus-operator", "retrainOnDrift": "true",
            "driftAlertWindows": "4", "retrainCooldown": "6h"}
RETRAIN_KEYS = ("Role/trainstack-retrain", "RoleBinding/trainstack-retrain",
                "ServiceAccount/trainstack-retrain", "ConfigMap/trainstack-retrain",
                f"CronJob/{CRONJOB}")


def manifest_of(rendering) -> RetrainManifest:
    data = rendering.objects["ConfigMap/trainstack-retrain"]["data"]["manifest.json"]
    return RetrainManifest.from_json(data)


def cronjob_pod(rendering, name: str = CRONJOB) -> dict:
    return rendering.objects[f"CronJob/{name}"]["spec"]["jobTemplate"]["spec"]["template"]


def test_without_retraining_keys_nothing_of_it_is_rendered():
    rendering = render(PUSHED)
    assert not [k for k in rendering.objects if "retrain" in k]
    assert "retrainCronJob" not in rendering.exports
    for replica in pytorchjob(rendering)["spec"]["pytorchReplicaSpecs"].values():
        env = env_of(replica["template"]["spec"]["containers"][0])
        assert GATE_ENV not in env and TOLERANCE_ENV not in env  # the trainer's defaults


def test_a_schedule_renders_a_cronjob_that_creates_the_stacks_own_training_job():
    rendering = render(SCHEDULED)
    assert all(key in rendering.objects for key in RETRAIN_KEYS)
    spec = rendering.objects[f"CronJob/{CRONJOB}"]["spec"]
    assert (spec["schedule"], spec["timeZone"], spec["suspend"]) == ("0 3 * * 0", "Etc/UTC", False)
    assert spec["concurrencyPolicy"] == "Forbid"
    manifest = manifest_of(rendering)
    job = pytorchjob(rendering)
    # The same workers, resources, image and pod template as the stack's own job.
    assert manifest.job["spec"] == job["spec"]
    assert (manifest.job["kind"], manifest.job["apiVersion"]) == ("PyTorchJob", "kubeflow.org/v1")
    assert manifest.name == "resnet18-cifar10" and manifest.prefix == "retrain-resnet18-cifar10"
    template = cronjob_pod(rendering)
    assert template["metadata"]["labels"]["app.kubernetes.io/name"] == "trainstack-retrain"
    pod = template["spec"]
    assert pod["serviceAccountName"] == "trainstack-retrain"
    # The one pod that calls the API: its token mounted by name, expiring, not automounted.
    assert pod["automountServiceAccountToken"] is False
    (token,) = [v for v in pod["volumes"] if v["name"] == "api-token"]
    assert token["projected"]["sources"][0]["serviceAccountToken"] == {
        "path": "token", "expirationSeconds": 3600}
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["command"][:4] == ["python", "-m", "trainer", "retrain"]
    # The dataset is downloaded again from where the ingest Job downloaded it.
    assert container["command"][6:] == ["--dataset", "cifar10", "--source",
                                        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"]
    env = env_of(container)
    assert env[NAMESPACE_ENV] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env[RETRAIN_JOB_ENV] == {
        "fieldRef": {"fieldPath": "metadata.labels['batch.kubernetes.io/job-name']"}}
    assert rendering.objects["ServiceAccount/trainstack-retrain"][
        "automountServiceAccountToken"] is False


def test_the_role_allows_only_the_training_job_kind_and_reading_jobs():
    for config, group, plural in ((SCHEDULED, "kubeflow.org", "pytorchjobs"),
                                  ({**SCHEDULED, "trainingApi": "trainjob"},
                                   "trainer.kubeflow.org", "trainjobs")):
        rendering = render(config)
        assert rendering.objects["Role/trainstack-retrain"]["rules"] == [
            {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get"]},
            {"apiGroups": [group], "resources": [plural],
             "verbs": ["create", "get", "list", "delete"]}]
        binding = rendering.objects["RoleBinding/trainstack-retrain"]
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                      "name": "trainstack-retrain"}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "trainstack-retrain",
                                        "namespace": "trainstack"}]
        assert not [o for o in rendering.objects.values() if o["kind"].startswith("Cluster")]


def test_a_trainjob_stack_retrains_with_its_trainjob():
    rendering = render({**SCHEDULED, "trainingApi": "trainjob", "workers": "3"})
    manifest = manifest_of(rendering)
    job = one(rendering, "TrainJob")
    assert manifest.job["kind"] == "TrainJob" and manifest.job["spec"] == job["spec"]
    assert manifest.job["spec"]["trainer"]["numNodes"] == 3


def test_retraining_on_drift_only_keeps_the_cronjob_for_retrains_by_hand():
    rendering = render(ON_DRIFT)
    spec = rendering.objects[f"CronJob/{CRONJOB}"]["spec"]
    assert (spec["schedule"], spec["suspend"]) == (BY_HAND_ONLY, True)
    drift = rendering.objects[f"CronJob/{DRIFT_CRONJOB}"]["spec"]
    assert (drift["schedule"], drift["suspend"], drift["concurrencyPolicy"]) == (
        DRIFT_CHECKS, False, "Forbid")
    (container,) = cronjob_pod(rendering, DRIFT_CRONJOB)["spec"]["containers"]
    assert container["command"][-5:] == ["--if-drift", "--drift-windows", "4", "--cooldown",
                                         "6h"]
    assert rendering.exports["retrainOnDriftCronJob"] == DRIFT_CRONJOB


def test_a_secret_dataset_source_is_read_from_its_secret_again():
    rendering = render({**SCHEDULED, "datasetSourceSecret": "presigned"})
    (container,) = cronjob_pod(rendering)["spec"]["containers"]
    assert container["command"][-4:] == ["--dataset", "cifar10", "--source-env",
                                         "TRAINSTACK_DATASET_SOURCE"]
    assert env_of(container)["TRAINSTACK_DATASET_SOURCE"] == {"secretKeyRef": {
        "name": "presigned", "key": "TRAINSTACK_DATASET_SOURCE"}}
    digits = render({**SCHEDULED, "dataset": "digits"})
    (container,) = cronjob_pod(digits)["spec"]["containers"]
    assert "--dataset" not in container["command"]  # nothing to download


@pytest.mark.parametrize(("config", "env"), [
    ({**PUSHED, "promotionGate": "false"}, {GATE_ENV: "off"}),
    ({**PUSHED, "promotionTolerance": "2.5"}, {TOLERANCE_ENV: "2.5"}),
])
def test_the_gates_settings_reach_every_training_pod_and_the_retrains(config, env):
    rendering = render({**config, "retrainSchedule": "@daily"})
    for job in (pytorchjob(rendering), manifest_of(rendering).job):
        for replica in job["spec"]["pytorchReplicaSpecs"].values():
            found = env_of(replica["template"]["spec"]["containers"][0])
            assert {k: found.get(k) for k in env} == env


def test_the_outputs_name_the_cronjob_and_how_to_retrain_by_hand():
    exports = render({**SCHEDULED, "namespace": "ml"}).exports
    assert exports["retrainCronJob"] == CRONJOB
    assert exports["retrainNow"].startswith(
        f"kubectl -n ml create job --from=cronjob/{CRONJOB} retrain-by-hand-")
    assert exports["promoteVersion"] == ("kubectl -n ml exec deploy/inference -- python -m "
                                         "trainer promote --model resnet18-cifar10 "
                                         "--version <VERSION>")


def test_the_fences_let_the_retrain_pod_reach_the_store_the_api_and_the_download():
    rendering = render({**SCHEDULED, "networkPolicy": "ingress-egress"})
    policy = rendering.objects["NetworkPolicy/trainstack-retrain"]["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"] and not policy.get("ingress")
    ports = {p.get("port") for rule in policy["egress"] for p in rule.get("ports", [])}
    assert {443, 6443, 53, "api"} <= ports  # the API server, DNS, MinIO's api port
    minio = rendering.objects["NetworkPolicy/minio"]["spec"]["ingress"]
    sources = [peer.get("podSelector", {}).get("matchLabels", {}).get(
        "app.kubernetes.io/name") for rule in minio for peer in rule["from"]]
    assert "trainstack-retrain" in sources
    assert json.dumps(rendering.objects["NetworkPolicy/trainer"]).count("trainstack-retrain") == 0
