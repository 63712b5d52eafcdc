"""The operators' CustomResourceDefinitions outlive `pulumi destroy`.

Deleting a CRD deletes every object of its kind in every namespace: destroying a stack
that installed the Training Operator (or Trainer v2 and JobSet) would delete every
PyTorchJob (TrainJob, JobSet) of every team on the cluster, and a replacement of a CRD
would do the same. So every CRD of an operator's kustomize overlay is registered with
`retainOnDelete`, as Trainer's Helm chart keeps its CRDs (`helm.sh/resource-policy: keep`,
which pulumi-kubernetes' Chart v4 turns into retainOnDelete): destroy removes them from
the stack's state only. The overlay is a provider-side component, whose children this
program never constructs; a `transforms` option on it is run by the engine for each child
(pulumi-kubernetes' own tests change yaml/v2 children that way), where `transformations`
would not reach them.

A later `pulumi up` that installs the operator again finds the CRDs in the cluster, and
pulumi-kubernetes (>= 4.29) refuses to create what exists unless told to adopt it:
`PULUMI_K8S_UPSERT_EXISTING_OBJECTS=true pulumi up` once (docs/operations.md).
"""

from __future__ import annotations

import pulumi

CRD_GROUP = "kubernetes:apiextensions.k8s.io/"
CRD_KIND = ":CustomResourceDefinition"


def is_crd(resource_type: str) -> bool:
    """A CustomResourceDefinition's Pulumi type token, whichever apiextensions version."""
    return resource_type.startswith(CRD_GROUP) and resource_type.endswith(CRD_KIND)


def retain_crds(args: pulumi.ResourceTransformArgs) -> pulumi.ResourceTransformResult | None:
    """A resource transform: CRDs get retainOnDelete, everything else stays as it is."""
    if not is_crd(args.type_):
        return None
    retained = pulumi.ResourceOptions.merge(args.opts, pulumi.ResourceOptions(
        retain_on_delete=True))
    return pulumi.ResourceTransformResult(props=args.props, opts=retained)
