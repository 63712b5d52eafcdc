"""Kueue (config `queue`, `queueQuota`): the training job waits suspended in the queue, the
objects queueQuota declares, what bad input stops, and how a run's progress is read. The
same against Kueue's real controller: tests/cluster/test_queue.py."""

from __future__ import annotations

import json

import pytest

from infra.config.keys import ConfigError, parse_config
from infra.workloads.jobparts import progress
from infra.workloads.jobparts.kueue import QUEUE_LABEL
from tests.infra.infra_helpers import PUSHED, one, pytorchjob
from tests.infra.render import render
from trainer.contract.reporting.job_status import API_CREDENTIALS_ENV, PROGRESS_JOB_ENV

QUOTA = json.dumps({"cpu": "8", "memory": "32Gi"})
QUEUED = {**PUSHED, "queue": "team-a"}


def test_a_queued_job_is_created_suspended_with_the_queue_label():
    plain, queued = render(PUSHED), render(QUEUED)
    job = pytorchjob(queued)
    assert job["metadata"]["labels"][QUEUE_LABEL] == "team-a"
    assert job["spec"]["runPolicy"]["suspend"] is True
    assert QUEUE_LABEL not in pytorchjob(plain)["metadata"]["labels"]
    assert "suspend" not in pytorchjob(plain)["spec"]["runPolicy"]
    # Another queue is another job (Kueue refuses a new queue for an admitted job).
    assert job["metadata"]["name"] != pytorchjob(plain)["metadata"]["name"]
    trainjob = one(render({**QUEUED, "trainingApi": "trainjob"}), "TrainJob")
    assert trainjob["metadata"]["labels"][QUEUE_LABEL] == "team-a"
    assert trainjob["spec"]["suspend"] is True
    # Without queueQuota the stack declares no Kueue object: the queue is the cluster's.
    assert not [k for k in queued.objects if "kueue" in queued.objects[k]["apiVersion"]]


def test_queue_quota_declares_the_flavor_the_cluster_queue_and_the_local_queue():
    rendering = render({**QUEUED, "queueQuota": json.dumps(
        {"cpu": "8", "memory": "32Gi", "gpus": 4}), "gpusPerWorker": "1"})
    flavor = rendering.objects["ResourceFlavor/trainstack-trainstack"]
    cluster_queue = rendering.objects["ClusterQueue/trainstack-trainstack"]
    local = rendering.objects["LocalQueue/team-a"]
    assert flavor["spec"] == {} and "namespace" not in flavor["metadata"]
    spec = cluster_queue["spec"]
    assert spec["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": "trainstack"}}  # this namespace only
    (group,) = spec["resourceGroups"]
    # Every resource a training pod requests: Kueue admits no pod asking for another.
    assert group["coveredResources"] == ["cpu", "memory", "ephemeral-storage", "nvidia.com/gpu"]
    (flavor_quota,) = group["flavors"]
    assert flavor_quota["name"] == "trainstack-trainstack"
    quota = {r["name"]: r["nominalQuota"] for r in flavor_quota["resources"]}
    pod = pytorchjob(rendering)["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    storage = pod["containers"][0]["resources"]["requests"]["ephemeral-storage"]
    assert quota == {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "4",
                     "ephemeral-storage": f"{2 * int(storage.removesuffix('Gi'))}Gi"}
    assert local["metadata"]["namespace"] == "trainstack"
    assert local["spec"] == {"clusterQueue": "trainstack-trainstack"}
    # Created before the job, deleted after it (Kueue keeps a queue a Workload uses).
    job = rendering.registration("PyTorchJob", pytorchjob(rendering)["metadata"]["name"])
    assert rendering.urn_of("LocalQueue", "team-a") in rendering.dependencies_of(job)
    order = [{rendering.resources[u].name for u in step} for step in rendering.destroy_order()]
    steps = {name: i for i, step in enumerate(order) for name in step}
    assert steps["pytorchjob"] < steps["local-queue"] < steps["cluster-queue"] \
        < steps["resource-flavor"] < steps["namespace"]


@pytest.mark.parametrize("config, key, says", [
    ({**PUSHED, "queueQuota": QUOTA}, "queue", "the LocalQueue queueQuota declares"),
    ({**QUEUED, "queueQuota": '{"cpu": "8"}'}, "queueQuota", "memory is missing"),
    ({**QUEUED, "queueQuota": '{"cpu": "8", "memory": "32Gi", "disk": 1}'}, "queueQuota",
     "'disk' is not one of cpu, memory, gpus"),
    ({**QUEUED, "queueQuota": "8 cpus"}, "queueQuota", "a JSON object"),
    ({**QUEUED, "queueQuota": '{"cpu": "two", "memory": "32Gi"}'}, "queueQuota",
     "cpu 'two' is not one"),
    # 3 workers of 4 CPUs: a quota of 8 could admit two of them, never the whole job.
    ({**QUEUED, "workers": "3", "cpuPerWorker": "4", "queueQuota": QUOTA}, "queueQuota",
     "3 workers need cpu 12, memory 9Gi, gpus 0 (here cpu is less)"),
    ({**QUEUED, "gpusPerWorker": "1", "queueQuota": QUOTA}, "queueQuota", "gpus is less"),
    ({**PUSHED, "queue": "Team_A"}, "queue", "a LocalQueue name (DNS-1123 label)"),
])
def test_bad_queue_input_is_one_line_naming_the_key(config, key, says):
    with pytest.raises(ConfigError) as raised:
        parse_config(config)
    message = str(raised.value)
    assert raised.value.key == key and message.startswith(f"invalid config trainstack:{key} ")
    assert says in message and "\n" not in message


def test_a_pytorchjobs_rank_0_may_patch_that_job_and_nothing_else():
    rendering = render(PUSHED)
    job = pytorchjob(rendering)
    name = job["metadata"]["name"]
    role = rendering.objects[f"Role/{progress.ROLE}"]
    (rule,) = role["rules"]
    assert rule == {"apiGroups": ["kubeflow.org"], "resources": ["pytorchjobs"],
                    "resourceNames": [name], "verbs": ["patch"]}
    binding = rendering.objects[f"RoleBinding/{progress.ROLE}"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "trainer",
                                    "namespace": "trainstack"}]
    for replica in job["spec"]["pytorchReplicaSpecs"].values():
        pod = replica["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False  # only the projected token
        (volume,) = [v for v in pod["volumes"] if v["name"] == progress.CREDENTIALS_VOLUME]
        token, ca = volume["projected"]["sources"]
        assert token["serviceAccountToken"]["path"] == "token"
        assert ca["configMap"]["name"] == "kube-root-ca.crt"
        env = {e["name"]: e.get("value", e.get("valueFrom")) for e in pod["containers"][0]["env"]}
        # The job's own name from the operator's label (a retrain's job is another one).
        names = [e["name"] for e in pod["containers"][0]["env"]]
        assert names.index(progress.JOB_NAME_ENV) < names.index(PROGRESS_JOB_ENV)
        assert env[progress.JOB_NAME_ENV] == {"fieldRef": {
            "fieldPath": "metadata.labels['training.kubeflow.org/job-name']"}}
        assert env[PROGRESS_JOB_ENV] == ("/apis/kubeflow.org/v1/namespaces/trainstack/"
                                         f"pytorchjobs/$({progress.JOB_NAME_ENV})")
        assert env[API_CREDENTIALS_ENV] == progress.CREDENTIALS_DIR
        assert pod["terminationGracePeriodSeconds"] == 30
    assert rendering.exports["progress"] == (
        f"kubectl -n trainstack get pytorchjob {name} -o jsonpath="
        "'{.metadata.annotations.trainstack/progress}'")


@pytest.mark.parametrize("config", [{"networkPolicy": "ingress-egress"},
                                    {"trainingApi": "trainjob"}])
def test_no_api_credentials_where_rank_0_does_not_annotate_its_job(config):
    """Egress fences cannot name the API server; a TrainJob reports to Trainer instead."""
    rendering = render({**PUSHED, **config})
    assert not [k for k in rendering.objects if k.startswith(("Role/", "RoleBinding/"))]
    assert progress.CREDENTIALS_VOLUME not in json.dumps(rendering.objects)
    if config.get("trainingApi"):
        name = one(rendering, "TrainJob")["metadata"]["name"]
        assert rendering.exports["progress"] == (
            f"kubectl -n trainstack get trainjob {name} -o jsonpath='{{.status.trainerStatus}}'")


def test_the_queue_is_followed_with_kubectl():
    assert "queueStatus" not in render(PUSHED).exports
    assert render(QUEUED).exports["queueStatus"] == (
        "kubectl -n trainstack get workloads.kueue.x-k8s.io -o wide")
