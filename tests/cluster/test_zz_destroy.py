"""`pulumi destroy`'s order on the real API server: the stack's objects step by step
(Rendering.destroy_order: custom resources, then the operator's patch, the operator, the
namespace last) leaves no finalizer stuck and nothing behind but the operator's CRDs,
which are retained (issue 28 #18): another team's PyTorchJob outlives the destroy.

It removes the Training Operator, so it runs last in the session (the module name sorts
after the others; run alone it installs the operator first, as the fixture does)."""

from __future__ import annotations

from tests.cluster.operator import in_apply_order, overlay_objects
from tests.cluster.stack_apply import apply_stack, delete_as_pulumi, namespace_of, volumes_for
from tests.cluster.test_operator import pytorchjob
from tests.cluster.test_stack_apply import wait_all_placed
from tests.infra.infra_helpers import PUSHED
from tests.infra.render import render

OTHER_TEAM = "another-team"


def test_destroy_order_leaves_no_finalizer_stuck(storage):
    cp = storage
    rendering = render({**PUSHED, "namespace": "ts-destroy"})
    ns = namespace_of(rendering)
    cp.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OTHER_TEAM}}])
    cp.apply([pytorchjob("their-run", OTHER_TEAM)])
    cp.apply(volumes_for(rendering))
    apply_stack(cp, rendering)
    wait_all_placed(cp, rendering)
    operator_removed, retained = False, []
    for step in rendering.destroy_order():
        for urn in sorted(step):
            registration = rendering.resources[urn]
            if not registration.custom or not registration.type.startswith("kubernetes:"):
                continue
            inputs = registration.inputs
            if not inputs:  # the operator's kustomize children: the real overlay goes
                if not operator_removed:
                    cp.processes.stop("training-operator")
                    for batch in reversed(in_apply_order(overlay_objects())):
                        for obj in batch:
                            if rendering.retained_child(registration.parent, obj):
                                retained.append(obj["metadata"]["name"])
                            else:
                                delete_as_pulumi(cp, obj)
                    operator_removed = True
                continue
            if registration.type.endswith("Patch"):
                continue  # Pulumi gives the fields back; the Deployment goes with the overlay
            delete_as_pulumi(cp, inputs)
    assert operator_removed
    # Every CRD of the overlay (group kubeflow.org) is kept, and with it every job of its kind.
    assert cp.get("pytorchjob", "their-run", "-n", OTHER_TEAM)["metadata"]["name"] == "their-run"
    crds = cp.kubectl("get", "crd", "-o", "name").stdout.split()
    assert retained and sorted(c.split("/", 1)[1] for c in crds if c.split("/", 1)[1].split(
        ".", 1)[1] == "kubeflow.org") == sorted(retained)
    namespaces = cp.kubectl("get", "namespace", "-o", "name").stdout.split()
    assert f"namespace/{ns}" not in namespaces and "namespace/kubeflow" not in namespaces
