"""The stack's objects on a real API server: accepted, every pod admitted under
`restricted` and scheduled (GPU pods on the GPU node), the operator's env, a rescale, and
nothing left behind after the namespace goes."""

from __future__ import annotations

import json
import logging

import pytest

from infra.workloads.pod import ACCESS_KEY_ID, SECRET_ACCESS_KEY
from tests.cluster.nodes import GPU_LABELS, GPU_NODE, GPU_TAINT
from tests.cluster.stack_apply import (
    apply_stack,
    delete_as_pulumi,
    dev_stack_config,
    expected_pods,
    namespace_of,
    placed,
    volumes_for,
    workload_of,
)
from tests.infra.infra_helpers import EXTERNAL, PASSWORD, PUSHED, RENDERED
from tests.infra.render import render

log = logging.getLogger(__name__)
GPU_SCHEDULING = {
    "nodeSelector": json.dumps({"nvidia.com/gpu.present": GPU_LABELS["nvidia.com/gpu.present"]}),
    "tolerations": json.dumps([{"key": GPU_TAINT["key"], "operator": "Exists",
                                "effect": GPU_TAINT["effect"]}]),
}
CONFIGS = {
    "dev": dev_stack_config(),
    "gpu": {**PUSHED, "workers": "2", "gpusPerWorker": "2", **GPU_SCHEDULING},
    "external-s3": EXTERNAL,
    "auth-fenced": {**PUSHED, "inferenceAuthToken": "cluster-tier-token-5f1e0a9b8c7d6e5f4a3b",
                    "networkPolicy": "ingress-egress", "minioRootPassword": PASSWORD},
    "no-mlflow": {**PUSHED, "mlflow": "false"},
    # renderYamlTo: the files a GitOps tool applies in one go (`kubectl apply --server-side`)
    "gitops": RENDERED,
}
USER_SECRETS = {"external-s3": EXTERNAL["storeCredentialsSecret"],
                "gitops": RENDERED["storeCredentialsSecret"]}
# The operator's contract with the trainer (trainer/run/distributed.py reads these).
OPERATOR_ENV = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK")


def pods_by_workload(cp, ns: str) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for pod in cp.get("pods", "-n", ns)["items"]:
        found.setdefault(workload_of(pod), []).append(pod)
    return found


def wait_all_placed(cp, rendering) -> dict[str, list[dict]]:
    ns, expected = namespace_of(rendering), expected_pods(rendering)

    def done():
        found = pods_by_workload(cp, ns)
        counts = {w: sum(placed(p) for p in found.get(w, [])) for w in expected}
        return found if counts == expected else None

    return cp.wait_for(f"every pod of {sorted(expected)} placed", done, timeout_s=120,
                       namespace=ns)


def create_user_secret(cp, ns: str, name: str) -> None:
    cp.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}])
    cp.apply([{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": ns},
               "stringData": {ACCESS_KEY_ID: "AKIAUSER", SECRET_ACCESS_KEY: "user-secret"}}])


def delete_namespace_leaves_nothing(cp, ns: str) -> None:
    cp.kubectl("delete", "namespace", ns, "--timeout=120s")
    kinds = cp.kubectl("api-resources", "--namespaced", "--verbs=list", "-o", "name").stdout
    left = cp.kubectl("get", ",".join(kinds.split()), "-n", ns, "-o", "name",
                      "--ignore-not-found").stdout.split()
    assert left == [], f"left behind in {ns}: {left}"


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_object_accepted_and_every_pod_placed(storage, name):
    cp = storage
    rendering = render({**CONFIGS[name], "namespace": f"ts-{name}"})
    ns = namespace_of(rendering)
    if name in USER_SECRETS:
        create_user_secret(cp, ns, USER_SECRETS[name])
    cp.apply(volumes_for(rendering))
    if "renderYamlTo" in CONFIGS[name]:  # one apply of every file, the Namespace first
        everything = sorted(rendering.objects.values(), key=lambda o: o["kind"] != "Namespace")
        accepted = cp.apply(everything).stdout.split()
    else:
        accepted = apply_stack(cp, rendering)
    log.info("%s: %d objects and patches applied", name, len(accepted))
    assert len(accepted) == len(rendering.objects) + len(rendering.patches)
    found = wait_all_placed(cp, rendering)
    for workload, pods in found.items():
        on_gpu = workload.startswith("PyTorchJob/") and int(
            CONFIGS[name].get("gpusPerWorker", "0")) > 0
        nodes = {p["spec"]["nodeName"] for p in pods}
        # Other tests of this control plane may add nodes (the TrainJob pool); what matters
        # is that GPU pods land on the GPU node and nothing else does (its taint).
        assert (nodes == {GPU_NODE}) if on_gpu else (GPU_NODE not in nodes), (workload, nodes)
    for workload, pods in found.items():
        if workload.startswith("PyTorchJob/"):
            check_operator_env(workload.split("/", 1)[1], pods)
    ns_labels = cp.get("namespace", ns)["metadata"]["labels"]
    assert ns_labels["pod-security.kubernetes.io/enforce"] == "restricted"
    delete_namespace_leaves_nothing(cp, ns)


def check_operator_env(job: str, pods: list[dict]) -> None:
    """What the real operator put in each `pytorch` container: the trainer's contract."""
    ranks = []
    for pod in pods:
        (container,) = [c for c in pod["spec"]["containers"] if c["name"] == "pytorch"]
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        assert set(OPERATOR_ENV) <= set(env), pod["metadata"]["name"]
        assert env["MASTER_ADDR"] == f"{job}-master-0"
        (port,) = [p["containerPort"] for p in container["ports"]
                   if p["name"] == "pytorchjob-port"] or [None]
        assert env["MASTER_PORT"] == str(port)
        assert env["WORLD_SIZE"] == str(len(pods))
        ranks.append(int(env["RANK"]))
        if pod["metadata"]["name"].endswith("-master-0"):
            assert env["RANK"] == "0"
    assert sorted(ranks) == list(range(len(pods)))


def test_a_gpu_count_no_node_has_stays_pending_and_says_why(storage):
    cp = storage
    rendering = render({**PUSHED, "workers": "2", "gpusPerWorker": "8", **GPU_SCHEDULING,
                        "namespace": "ts-too-many-gpus"})
    ns = namespace_of(rendering)
    cp.apply(volumes_for(rendering))
    apply_stack(cp, rendering)

    def unschedulable():
        events = cp.get("events", "-n", ns)["items"]
        return [e for e in events if e["reason"] == "FailedScheduling"
                and "Insufficient nvidia.com/gpu" in e["message"]]

    assert cp.wait_for("FailedScheduling for the GPUs", unschedulable, namespace=ns)
    job_pods = pods_by_workload(cp, ns)
    (job,) = [w for w in job_pods if w.startswith("PyTorchJob/")]
    assert {p["status"]["phase"] for p in job_pods[job]} == {"Pending"}
    assert not any(p["spec"].get("nodeName") for p in job_pods[job])
    delete_namespace_leaves_nothing(cp, ns)


def test_a_rescale_leaves_exactly_the_new_jobs_pods(storage):
    """`workers 3` + `pulumi up`: the old PyTorchJob is deleted, then the new one created."""
    cp = storage
    config = {**PUSHED, "namespace": "ts-rescale", "mlflow": "false"}
    before = render(config)
    ns = namespace_of(before)
    cp.apply(volumes_for(before))
    apply_stack(cp, before)
    wait_all_placed(cp, before)
    after = render({**config, "workers": "3"})
    (old,) = [o for o in before.objects.values() if o["kind"] == "PyTorchJob"]
    (new,) = [o["metadata"]["name"] for o in after.objects.values() if o["kind"] == "PyTorchJob"]
    assert old["metadata"]["name"] != new
    delete_as_pulumi(cp, old)
    apply_stack(cp, after)
    wait_all_placed(cp, after)

    def only_new():
        jobs = {w: len(p) for w, p in pods_by_workload(cp, ns).items()
                if w.startswith("PyTorchJob/")}
        return jobs if jobs == {f"PyTorchJob/{new}": 3} else None

    cp.wait_for("the old job's pods to be gone", only_new, namespace=ns)
    delete_namespace_leaves_nothing(cp, ns)
