"""`trainingApi: trainjob` on a real control plane with the real Trainer v2 and JobSet
controllers (tests/cluster/trainer_v2.py): what they admit, refuse and make of the stack's
objects.

The stack's objects (its mock rendering) are applied server-side in `pulumi up`'s order;
the controllers turn the TrainJob into a JobSet, a Job and its pods, which the real
scheduler places on a kwok node under the namespace's Pod Security `restricted`. Running
those pods: tests/cluster/test_trainjob_runs.py.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from infra.workloads import trainjob as tj
from tests.cluster.controlplane import ControlPlane
from tests.cluster.sockets import sockets_of
from tests.cluster.stack_apply import delete_as_pulumi
from tests.cluster.trainjob_kit import (
    CONFIG,
    JOBSET,
    NODE_NAME,
    WAIT_S,
    apply_stack,
    finished,
    installed,
    jobsets_made,
    pods_of,
    scheduled_pods,
)
from tests.infra.infra_helpers import trainjob_pods
from tests.infra.render import render

# What the kubelet and the controllers add to a pod that the stack's template does not
# set; everything else in the pod must be the stack's (infra_helpers.trainjob_pods).
ADDED_ENV = set(tj.TORCH_ENV) | {"JOB_COMPLETION_INDEX"}


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


@pytest.fixture(scope="module")
def trainer(control_plane: ControlPlane, tmp_path_factory) -> ControlPlane:
    return installed(control_plane, tmp_path_factory.mktemp("trainer-v2"))


def test_the_controllers_make_the_pods_the_stack_declares(trainer: ControlPlane):
    cp, config = trainer, {**CONFIG, "namespace": "trainjob-admitted", "workers": "2"}
    rendering = render(config)
    job = apply_stack(cp, rendering)
    name, namespace = job["metadata"]["name"], job["metadata"]["namespace"]
    labels = cp.get("namespace", namespace)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    pods = scheduled_pods(cp, namespace, name, 2)
    expected = trainjob_pods(rendering.objects, job)
    for rank, (pod, want) in enumerate(zip(pods, expected, strict=True)):
        assert pod["metadata"]["name"].startswith(f"{name}-{tj.NODE}-0-{rank}-")
        assert want["metadata"]["labels"].items() <= pod["metadata"]["labels"].items()
        spec, want_spec = pod["spec"], want["spec"]
        for key in ("serviceAccountName", "automountServiceAccountToken", "securityContext",
                    "restartPolicy", "nodeSelector"):
            assert spec.get(key) == want_spec.get(key), key
        assert [{k: v for k, v in vol.items() if k != "configMap"} for vol in spec["volumes"]] \
            == [{k: v for k, v in vol.items() if k != "configMap"}
                for vol in want_spec["volumes"]]
        (container,), (want_container,) = spec["containers"], want_spec["containers"]
        for key in ("name", "image", "command", "resources", "securityContext",
                    "volumeMounts", "imagePullPolicy"):
            assert container.get(key) == want_container.get(key), key
        env = env_of(container)
        assert {k: v for k, v in env.items() if k not in ADDED_ENV} == env_of(want_container)
        # The torch plugin's env, and none of the torch env torchrun sets itself.
        assert env["PET_NNODES"] == "2" and env["PET_NPROC_PER_NODE"] == "1"
        assert env["PET_MASTER_ADDR"] == f"{name}-{tj.NODE}-0-0.{name}"
        assert env["PET_MASTER_PORT"] == str(tj.MASTER_PORT)
        assert env["PET_NODE_RANK"]["fieldRef"]["fieldPath"] == (
            f"metadata.annotations['{tj.COMPLETION_INDEX_LABEL}']")
        assert pod["metadata"]["annotations"][tj.COMPLETION_INDEX_LABEL] == str(rank)
        assert not {"MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE"} & set(env)
        # Rank 0's DNS name: the JobSet's headless Service and the pod's hostname.
        assert (spec["hostname"], spec["subdomain"]) == (f"{name}-{tj.NODE}-0-{rank}", name)
        assert spec["nodeName"] == NODE_NAME
    cp.get("service", "-n", namespace, name)
    # kwok completes Job pods: the TrainJob reaches a condition `pulumi`'s docs tell to wait for.
    status = cp.wait_for("the TrainJob to finish", lambda: finished(cp, namespace, name),
                         timeout_s=WAIT_S)
    assert status == "Complete"


def test_the_controllers_listen_and_dial_on_loopback_only(trainer: ControlPlane):
    for name in ("trainer-controller-manager", "jobset-controller"):
        sockets = sockets_of(trainer.processes.started[name].pid)
        assert [s for s in sockets if not s.stays_on_loopback()] == [], name
        assert any(s.listening for s in sockets) and any(not s.listening for s in sockets)


def test_a_failed_pod_restarts_every_rank_until_max_restarts(trainer: ControlPlane):
    """The stack's runtime on the real JobSet: one failed pod fails its Job (backoffLimit
    0) and JobSet recreates every rank's pod, up to maxRestarts; then the TrainJob is
    Failed. The pods wait unscheduled (a node pool no node has), so whether one fails is
    this test's to say: it sets a pod's phase as a kubelet would."""
    cp = trainer
    config = {**CONFIG, "namespace": "trainjob-failing", "workers": "2",
              "nodeSelector": json.dumps({"trainstack.test/pool": "none"})}
    job = apply_stack(cp, render(config))
    name, namespace = job["metadata"]["name"], job["metadata"]["namespace"]
    max_restarts = cp.get("trainingruntime", "-n", namespace, tj.RUNTIME)[
        "spec"]["template"]["spec"]["failurePolicy"]["maxRestarts"]
    seen: set[str] = set()
    for attempt in range(max_restarts + 1):
        def ranks_of_attempt(attempt=attempt):
            pods = [p for p in pods_of(cp, namespace, name)
                    if p["metadata"]["labels"][f"{JOBSET}restart-attempt"] == str(attempt)
                    and "deletionTimestamp" not in p["metadata"]]
            return pods if len(pods) == 2 else None
        pods = cp.wait_for(f"every rank's pod of attempt {attempt}", ranks_of_attempt,
                           timeout_s=WAIT_S)
        uids = {p["metadata"]["uid"] for p in pods}
        assert not uids & seen  # every rank got a new pod, not only the failed one
        seen |= uids
        assert finished(cp, namespace, name) is None
        cp.kubectl("patch", "pod", pods[1]["metadata"]["name"], "-n", namespace,
                   "--subresource=status", "--type=merge", "-p",
                   json.dumps({"status": {"phase": "Failed"}}))
    assert cp.wait_for("the TrainJob to fail", lambda: finished(cp, namespace, name),
                       timeout_s=WAIT_S) == "Failed"
    assert cp.get("jobset", "-n", namespace, name)["status"]["restarts"] == max_restarts


@pytest.mark.parametrize(("env", "refused"), [
    ({"name": "PET_NNODES", "value": "4"}, "must not have reserved envs"),
    ({"name": "PET_MASTER_ADDR", "value": "elsewhere"}, "must not have reserved envs"),
])
def test_the_webhook_refuses_the_torch_env_in_the_trainjob(trainer, env, refused):
    cp = trainer
    rendering = render({**CONFIG, "namespace": "trainjob-refused"})
    job = apply_stack(cp, rendering)
    broken = copy.deepcopy(job)
    broken["metadata"]["name"] += "-x"
    broken["spec"]["trainer"]["env"].append(env)
    out = cp.apply([broken], dry_run=True, check=False)
    assert out.returncode != 0 and refused in out.stderr, out.stderr


def test_deleting_a_running_trainjob_as_the_stack_does_never_remakes_its_jobset(trainer):
    """Trainer (v2.3) reconciles a TrainJob whose foreground deletion is pending and
    recreates the JobSet the garbage collector has just deleted, with new pods, until a
    race ends it (each remade JobSet is a new uid). The stack deletes its TrainJob in the
    background (its annotation): the one JobSet and its pods go, and nothing is remade.
    The job is running (its pods wait for a node pool no node has), as a rescale finds it."""
    cp = trainer
    config = {**CONFIG, "namespace": "trainjob-deleted", "workers": "2",
              "nodeSelector": json.dumps({"trainstack.test/pool": "none"})}
    job = apply_stack(cp, render(config))
    name, namespace = job["metadata"]["name"], job["metadata"]["namespace"]
    cp.wait_for("the JobSet's 2 pods", lambda: len(pods_of(cp, namespace, name)) == 2,
                timeout_s=WAIT_S, namespace=namespace)
    assert finished(cp, namespace, name) is None
    first = cp.get("jobset", "-n", namespace, name)["metadata"]["uid"]
    with jobsets_made(cp, namespace, first) as uids:
        delete_as_pulumi(cp, job)
        cp.wait_for("the JobSet and its pods to be gone", lambda: not pods_of(
            cp, namespace, name) and not cp.get("jobsets", "-n", namespace)["items"],
            timeout_s=WAIT_S, namespace=namespace)
    assert uids == [first], f"{len(uids) - 1} JobSets remade after the TrainJob's deletion"


def test_destroy_order_deletes_the_trainjob_its_runtime_and_the_namespace(trainer):
    """`pulumi destroy`'s steps (Rendering.destroy_order) on the real controllers: the
    TrainJob (its JobSet and pods with it), the runtime (no finalizer of Trainer's left
    on it), then the rest and the namespace: nothing stays."""
    cp = trainer
    rendering = render({**CONFIG, "namespace": "trainjob-destroy",
                        "installTrainingOperator": "false"})
    job = apply_stack(cp, rendering)
    namespace = job["metadata"]["namespace"]
    scheduled_pods(cp, namespace, job["metadata"]["name"], 2)
    for step in rendering.destroy_order():
        for urn in sorted(step):
            inputs = rendering.resources[urn].inputs
            if "kind" not in inputs or "metadata" not in inputs:
                continue  # components, the image, the generated password
            delete_as_pulumi(cp, inputs)
    gone = cp.kubectl("get", "namespace", namespace, check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr
    assert all(j["metadata"]["namespace"] != namespace
               for j in cp.get("jobsets", "-A")["items"])
