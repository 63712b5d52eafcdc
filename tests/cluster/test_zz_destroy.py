"""`pulumi destroy`'s order on the real API server: the stack's objects step by step
(Rendering.destroy_order: custom resources, then the operator's patch, the operator and its
CRDs, the namespace last) leaves no finalizer stuck and nothing behind.

It removes the Training Operator, so it runs last in the session (the module name sorts
after the others; run alone it installs the operator first, as the fixture does)."""

from __future__ import annotations

from tests.cluster.operator import in_apply_order, overlay_objects
from tests.cluster.stack_apply import apply_stack, delete_as_pulumi, namespace_of, volumes_for
from tests.cluster.test_stack_apply import wait_all_placed
from tests.infra.infra_helpers import PUSHED
from tests.infra.render import render


def test_destroy_order_leaves_no_finalizer_stuck(storage):
    cp = storage
    rendering = render({**PUSHED, "namespace": "ts-destroy"})
    ns = namespace_of(rendering)
    cp.apply(volumes_for(rendering))
    apply_stack(cp, rendering)
    wait_all_placed(cp, rendering)
    operator_removed = False
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
                            delete_as_pulumi(cp, obj)
                    operator_removed = True
                continue
            if registration.type.endswith("Patch"):
                continue  # Pulumi gives the fields back; the Deployment goes with the overlay
            delete_as_pulumi(cp, inputs)
    assert operator_removed
    crds = cp.kubectl("get", "crd", "-o", "name").stdout.split()
    # The operator's CRDs (group kubeflow.org); Trainer v2's (trainer.kubeflow.org, from
    # tests/cluster/test_trainjob*.py) are not the stack's to remove here.
    assert not [c for c in crds if c.split("/", 1)[1].split(".", 1)[1] == "kubeflow.org"], crds
    namespaces = cp.kubectl("get", "namespace", "-o", "name").stdout.split()
    assert f"namespace/{ns}" not in namespaces and "namespace/kubeflow" not in namespaces
