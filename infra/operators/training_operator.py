"""TrainingOperator: the Kubeflow Training Operator's standalone overlay, pinned.

Module name avoids `operator`, which would shadow the standard library.

Any v1 release from v1.3.0 (the first with PyTorchJob) is accepted. The releases below
were checked by reading their manifests: `manifests/overlays/standalone` exists and pins
the operator image, the PyTorchJob CRD is kubeflow.org/v1 with `runPolicy`
(backoffLimit, cleanPodPolicy), the operator injects MASTER_ADDR, MASTER_PORT (the
`pytorchjob-port` container port), WORLD_SIZE (= replicas with nprocPerNode unset) and
RANK into the `pytorch` container, and puts no finalizer on a PyTorchJob (its pods are
removed by Kubernetes' garbage collector through their owner references). For these the
overlay is fetched at the commit the tag named when it was checked, so a moved tag cannot
change what is installed; any other v1 tag is fetched by tag, with a warning.

Pod Security: the stack's namespace enforces `restricted` (infra/stack.py). v1.8.1 adds an
`init-pytorch` init container to every Worker pod (`alpine:3.10` by tag, no
securityContext: `restricted` refuses the pod, the job never gets its Workers). It only
waits for the Master's DNS name, which torch's rendezvous already does (the TCPStore
client retries an unresolvable MASTER_ADDR until the process group's timeout), so the
stack turns it off: the operator reads its init-container template from
/etc/config/initContainer.yaml when that file exists (pkg/controller.v1/pytorch/
initcontainer.go, `--pytorch-init-container-template-file`'s default), and an empty list
there means no init container. A ConfigMap holds that template and a server-side-apply
patch of the operator's Deployment mounts it; the operator's other fields stay the
overlay's. tests/cluster shows the Workers admitted on a real API server.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s
from pulumi_kubernetes.kustomize import v2 as kustomize

from infra.operators.crds import retain_crds

REPO = "https://github.com/kubeflow/training-operator"
OVERLAY = "manifests/overlays/standalone"
OPERATOR_NAMESPACE = "kubeflow"
OPERATOR_DEPLOYMENT = "training-operator"  # the overlay's Deployment and its container
INIT_TEMPLATE_CONFIGMAP = "training-operator-init-container"
INIT_TEMPLATE_DIR = "/etc/config"  # v1.8.1 config.PyTorchInitContainerTemplateFileDefault
INIT_TEMPLATE_FILE = "initContainer.yaml"
NO_INIT_CONTAINERS = "[]\n"  # the template: a YAML list of containers, here none
# tag -> the commit it named when checked (v1.8.0 added the admission webhook).
CHECKED_RELEASES = {
    "v1.3.0": "3aa19beb58b8f37c9e24d9f04d02446937ea1a29",
    "v1.4.0": "1d10a49064d86e6d5811202ea75db3a80c332df2",
    "v1.5.0": "1435d57a60e9ee678e640bd8aea83fd62a310287",
    "v1.6.0": "66aa6353c19ddf4177b98db7b243b5caa0a43e21",
    "v1.7.0": "5525468b9057a6e608f5093b49f4fdb91e985658",
    "v1.8.0": "f8687ca7fd947e6ebd52dde4dfeefdf006e7b239",
    "v1.8.1": "0f8735faade3651dfe44e45c6fbc30fa9152641d",
    "v1.9.0": "6f74c7f6b2ed6c27aabd82d0a316b23f0646059c",
}


def overlay_url(version: str) -> str:
    """A kustomize remote target: `<repo>//<dir>?ref=<commit or tag>` (cloned by the provider)."""
    return f"{REPO}//{OVERLAY}?ref={CHECKED_RELEASES.get(version, version)}"


def unchecked_warning(version: str) -> str | None:
    if version in CHECKED_RELEASES:
        return None
    return (f"Training Operator {version} was not checked with this stack (checked: "
            f"{', '.join(CHECKED_RELEASES)}); its overlay is fetched by tag")


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
        warning = unchecked_warning(args.version)
        if warning:
            pulumi.log.warn(warning, resource=self)
        self.manifests = kustomize.Directory(
            "training-operator",
            directory=overlay_url(args.version),
            # Its CRDs stay on destroy: deleting one deletes every team's jobs (crds.py).
            opts=pulumi.ResourceOptions(parent=self, transforms=[retain_crds]),
        )
        self.init_template = _init_template(self.manifests, self)
        self.register_outputs(
            {"version": args.version, "namespace": OPERATOR_NAMESPACE,
             "source": overlay_url(args.version)}
        )


def _init_template(manifests: kustomize.Directory, parent: pulumi.Resource
                   ) -> k8s.apps.v1.DeploymentPatch:
    """The empty init-container template, mounted where the operator reads it."""
    opts = pulumi.ResourceOptions(parent=parent, depends_on=[manifests])
    config_map = k8s.core.v1.ConfigMap(
        INIT_TEMPLATE_CONFIGMAP,
        metadata=k8s.meta.v1.ObjectMetaArgs(name=INIT_TEMPLATE_CONFIGMAP,
                                            namespace=OPERATOR_NAMESPACE),
        data={INIT_TEMPLATE_FILE: NO_INIT_CONTAINERS},
        opts=opts,
    )
    volume = "init-container-template"
    return k8s.apps.v1.DeploymentPatch(
        "training-operator-init-template",
        metadata=k8s.meta.v1.ObjectMetaPatchArgs(name=OPERATOR_DEPLOYMENT,
                                                 namespace=OPERATOR_NAMESPACE),
        spec=k8s.apps.v1.DeploymentSpecPatchArgs(
            template=k8s.core.v1.PodTemplateSpecPatchArgs(
                spec=k8s.core.v1.PodSpecPatchArgs(
                    volumes=[k8s.core.v1.VolumePatchArgs(
                        name=volume,
                        config_map=k8s.core.v1.ConfigMapVolumeSourcePatchArgs(
                            name=INIT_TEMPLATE_CONFIGMAP))],
                    containers=[k8s.core.v1.ContainerPatchArgs(
                        name=OPERATOR_DEPLOYMENT,
                        volume_mounts=[k8s.core.v1.VolumeMountPatchArgs(
                            name=volume, mount_path=INIT_TEMPLATE_DIR, read_only=True)])],
                ),
            ),
        ),
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[manifests, config_map]),
    )
