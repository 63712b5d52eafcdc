"""TrainerV2: Kubeflow Trainer v2 (TrainJob on JobSet), its manager overlay, pinned.

`trainingApi: trainjob` with `installTrainingOperator` installs this instead of the v1
Training Operator. The overlay `manifests/overlays/manager` holds the CRDs
(TrainJob, TrainingRuntime, ClusterTrainingRuntime), the controller manager, its RBAC and
webhooks, and JobSet (its `third-party/jobset`, the JobSet release manifests), all in the
`kubeflow-system` namespace. It is fetched at the commit its tag named when checked, so a
moved tag cannot change what is installed.

No Helm chart: Trainer's chart (v2.3+) installs its built-in runtimes from a post-install
hook Job that runs `apk add kubectl` from the internet, and pulumi-kubernetes' Helm
components drop hooks. The stack needs none of the built-in runtimes: it declares its
own TrainingRuntime (infra/workloads/trainjob.py). pulumi-kubernetes applies server-side (its
default), which the large CRDs need (a client-side apply's last-applied annotation would
exceed the 256 KiB annotation limit).

The controller manages its own webhook certificates (its `certManagement`, on by default):
it fills the `kubeflow-trainer-webhook-cert` Secret and the webhook configurations' CA
bundle, and its /readyz only passes once the webhook server listens with them.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
from pulumi_kubernetes.kustomize import v2 as kustomize

from infra.operators.crds import retain_crds

REPO = "https://github.com/kubeflow/trainer"
OVERLAY = "manifests/overlays/manager"
TRAINER_NAMESPACE = "kubeflow-system"
# The release the stack is checked with (tests/cluster runs its controller and JobSet's),
# and the commit its tag named (the Go module proxy's origin record of the tag).
VERSION = "v2.3.0"
COMMIT = "658725bdae5c7e3a0854d93ac6ff492e109a22ab"
JOBSET_VERSION = "v0.12.0"  # what the overlay's third-party/jobset installs


def overlay_url() -> str:
    """A kustomize remote target: `<repo>//<dir>?ref=<commit>` (cloned by the provider)."""
    return f"{REPO}//{OVERLAY}?ref={COMMIT}"


@dataclass
class TrainerV2Args:
    version: str = VERSION


class TrainerV2(pulumi.ComponentResource):
    """Depend on this component to wait for Trainer's and JobSet's admission webhooks.

    As with the v1 operator, kustomize/v2.Directory is a provider-side component:
    depending on it waits for its children, and pulumi-kubernetes awaits both
    Deployments' readiness, which their /readyz only reports once their webhook
    servers listen with certificates (cmd/trainer-controller-manager/main.go).
    """

    def __init__(self, name: str, args: TrainerV2Args,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("trainstack:index:TrainerV2", name, None, opts)
        if args.version != VERSION:
            raise ValueError(f"Kubeflow Trainer {args.version}: only {VERSION} is checked "
                             "with this stack")
        self.manifests = kustomize.Directory(
            "kubeflow-trainer",
            directory=overlay_url(),
            # Its CRDs stay on destroy: deleting one deletes every team's jobs (crds.py).
            opts=pulumi.ResourceOptions(parent=self, transforms=[retain_crds]),
        )
        self.register_outputs({"version": args.version, "namespace": TRAINER_NAMESPACE,
                               "source": overlay_url(), "jobset": JOBSET_VERSION})
