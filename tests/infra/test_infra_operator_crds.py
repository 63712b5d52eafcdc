"""Issue 28 #18: `pulumi destroy` of a stack that installed an operator keeps its CRDs.

Deleting a CRD deletes every object of its kind in every namespace (every team's
PyTorchJobs, TrainJobs, JobSets). The overlays' CRDs are registered with retainOnDelete,
by a `transforms` option the engine runs on the provider-side component's children; the
rest of the operator (its Deployment, RBAC, webhooks) is deleted as before.
tests/cluster/test_zz_destroy.py shows another namespace's PyTorchJob outliving a destroy
on a real API server."""

from __future__ import annotations

import pytest

from infra.operators.crds import is_crd, retain_crds
from tests.infra.infra_helpers import PUSHED
from tests.infra.render import DIRECTORY_TYPE, render

CONFIGS = {"pytorchjob": PUSHED, "trainjob": {**PUSHED, "trainingApi": "trainjob"}}


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_the_overlay_crds_are_retained_and_nothing_else(config):
    rendering = render(config)
    (directory,) = rendering.by_type(DIRECTORY_TYPE)
    children = [r for r in rendering.resources.values() if r.parent == directory.urn]
    crds = [r for r in children if is_crd(r.type)]
    assert crds and all(r.retain_on_delete for r in crds), [(r.name, r.retain_on_delete)
                                                            for r in crds]
    others = [r for r in children if not is_crd(r.type)]
    assert others and not any(r.retain_on_delete for r in others)
    # The stack's own objects are deleted on destroy as before.
    assert not [r.name for r in rendering.resources.values()
                if r.retain_on_delete and r.parent != directory.urn]


@pytest.mark.parametrize("manifest, retained", [
    ({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
      "metadata": {"name": "pytorchjobs.kubeflow.org"}}, True),
    ({"apiVersion": "apiextensions.k8s.io/v1beta1", "kind": "CustomResourceDefinition",
      "metadata": {"name": "old.example.org"}}, True),
    ({"apiVersion": "apps/v1", "kind": "Deployment",
      "metadata": {"name": "training-operator", "namespace": "kubeflow"}}, False),
    ({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kubeflow"}}, False),
])
def test_any_manifest_of_an_overlay_is_judged_by_its_kind(manifest, retained):
    rendering = render(PUSHED)
    (directory,) = rendering.by_type(DIRECTORY_TYPE)
    assert rendering.retained_child(directory.urn, manifest) is retained


def test_the_transform_keeps_what_the_provider_gave_the_child():
    import pulumi

    given = pulumi.ResourceOptions(protect=True, ignore_changes=["spec"])
    result = retain_crds(pulumi.ResourceTransformArgs(
        True, "kubernetes:apiextensions.k8s.io/v1:CustomResourceDefinition", "c",
        {"spec": {}}, given))
    assert result.props == {"spec": {}} and result.opts.retain_on_delete
    assert result.opts.protect and result.opts.ignore_changes == ["spec"]
