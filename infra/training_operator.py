"""TrainingOperator: the Kubeflow Training Operator's standalone overlay, pinned.

Module name avoids `operator`, which would shadow the standard library when Pulumi puts
infra/ first on the import path.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
from pulumi_kubernetes.kustomize import v2 as kustomize

REPO = "https://github.com/kubeflow/training-operator"
OVERLAY = "manifests/overlays/standalone"
OPERATOR_NAMESPACE = "kubeflow"


def overlay_url(version: str) -> str:
    """A kustomize remote target: `<repo>//<dir>?ref=<tag>` (cloned by the provider)."""
    return f"{REPO}//{OVERLAY}?ref={version}"


@dataclass
class TrainingOperatorArgs:
    version: str


class TrainingOperator(pulumi.ComponentResource):
    """Depend on this component to wait for the operator's admission webhook.

    kustomize/v2.Directory is a provider-side component: depending on it waits for all of
    its children, and pulumi-kubernetes awaits the operator Deployment's readiness (and
    the webhook Service's endpoints). The operator's /readyz only passes once its webhook
    certificates exist and the webhook server listens, so "ready" means "PyTorchJobs are
    admitted" (kubeflow/training-operator cmd/training-operator.v1/main.go).
    """

    def __init__(
        self, name: str, args: TrainingOperatorArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("trainstack:index:TrainingOperator", name, None, opts)
        self.version = args.version
        self.manifests = kustomize.Directory(
            "training-operator",
            directory=overlay_url(args.version),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs(
            {"version": args.version, "namespace": OPERATOR_NAMESPACE,
             "source": overlay_url(args.version)}
        )
