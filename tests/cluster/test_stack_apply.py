"""The stack's objects on a real API server: accepted, every pod admitted under
`restricted` and scheduled (GPU pods on the GPU node), the operator's env, a rescale, and
nothing left behind after the namespace goes."""

from __future__ import annotations

import json
import logging

import pytest

from infra.pod import ACCESS_KEY_ID, SECRET_ACCESS_KEY
from tests.cluster.nodes import CPU_NODE, GPU_LABELS, GPU_NODE, GPU_TAINT
from tests.cluster.stack_apply import (
    apply_stack,
    default_storage_class,
    dev_stack_config,
    expected_pods,
    namespace_of,
    placed,
    volumes_for,
    workload_of,
)
from tests.infra.infra_helpers import EXTERNAL, PASSWORD, PUSHED
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
}
USER_SECRETS = {"external-s3": EXTERNAL["storeCredentialsSecret"]}


@pytest.fixture(scope="module")
def storage(operator):
    operator.apply([default_storage_class()])
    return operator


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
    accepted = apply_stack(cp, rendering)
    log.info("%s: %d objects and patches applied", name, len(accepted))
    assert len(accepted) == len(rendering.objects) + len(rendering.patches)
    found = wait_all_placed(cp, rendering)
    for workload, pods in found.items():
        on_gpu = workload.startswith("PyTorchJob/") and int(
            CONFIGS[name].get("gpusPerWorker", "0")) > 0
        assert {p["spec"]["nodeName"] for p in pods} == {GPU_NODE if on_gpu else CPU_NODE}
    ns_labels = cp.get("namespace", ns)["metadata"]["labels"]
    assert ns_labels["pod-security.kubernetes.io/enforce"] == "restricted"
    delete_namespace_leaves_nothing(cp, ns)
