"""A run's progress where `kubectl` looks (trainer.contract.reporting.job_status names both sides).

A TrainJob needs nothing of the stack: Trainer v2's `TrainJobStatus` gate puts its status
server's URL, CA and a token bound to the job into the pods, and `kubectl get trainjob -o
yaml` shows what rank 0 reports as `status.trainerStatus`.

A PyTorchJob's rank 0 merge-patches the job's `trainstack/progress` annotation. Least
privilege: a Role that may patch that one job (by name: a replaced job's new name
replaces the rule) bound to the trainer's ServiceAccount, and a token of its own in the
pod (a projected volume with the cluster's CA), not the automounted one every workload
goes without (infra/workloads/pod.py). Not with `networkPolicy: ingress-egress`: a
NetworkPolicy cannot name the API server but by its addresses, which the stack does not
know, and opening port 443 to every address would let the training pods reach anything.
"""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from trainer.contract.reporting.job_status import (
    API_CREDENTIALS_ENV,
    PROGRESS_ANNOTATION,
    PROGRESS_JOB_ENV,
    pytorchjob_path,
)

ROLE = "trainstack-job-progress"
CREDENTIALS_VOLUME = "api-credentials"
CREDENTIALS_DIR = "/var/run/secrets/trainstack/api"
TOKEN_SECONDS = 3600  # the kubelet renews it before it expires; the trainer reads it each time
ROOT_CA = "kube-root-ca.crt"  # the cluster's CA, a ConfigMap in every namespace
PYTORCHJOB_NAME_LABEL = "training.kubeflow.org/job-name"  # the operator's, on every pod
JOB_NAME_ENV = "TRAINSTACK_JOB_NAME"


def annotated(api: str, network_policy: str) -> bool:
    """Whether rank 0 annotates its PyTorchJob (see the module docstring)."""
    return api == "pytorchjob" and network_policy != "ingress-egress"


def env(namespace: pulumi.Input[str]) -> list[k8s.core.v1.EnvVarArgs]:
    """What rank 0 needs to find its job and its credentials. The job's name comes from the
    operator's label on the pod (downward API), not from the stack: a job made from the
    same spec under another name (a retrain, trainer.retrain) reports on itself."""
    return [
        k8s.core.v1.EnvVarArgs(name=JOB_NAME_ENV, value_from=k8s.core.v1.EnvVarSourceArgs(
            field_ref=k8s.core.v1.ObjectFieldSelectorArgs(
                field_path=f"metadata.labels['{PYTORCHJOB_NAME_LABEL}']"))),
        # Kubernetes expands $(VAR) of a variable defined before it.
        k8s.core.v1.EnvVarArgs(name=PROGRESS_JOB_ENV, value=pulumi.Output.from_input(
            namespace).apply(lambda ns: pytorchjob_path(ns, f"$({JOB_NAME_ENV})"))),
        k8s.core.v1.EnvVarArgs(name=API_CREDENTIALS_ENV, value=CREDENTIALS_DIR),
    ]


def credentials_volume() -> k8s.core.v1.VolumeArgs:
    return k8s.core.v1.VolumeArgs(
        name=CREDENTIALS_VOLUME,
        projected=k8s.core.v1.ProjectedVolumeSourceArgs(sources=[
            k8s.core.v1.VolumeProjectionArgs(
                service_account_token=k8s.core.v1.ServiceAccountTokenProjectionArgs(
                    path="token", expiration_seconds=TOKEN_SECONDS)),
            k8s.core.v1.VolumeProjectionArgs(config_map=k8s.core.v1.ConfigMapProjectionArgs(
                name=ROOT_CA, items=[k8s.core.v1.KeyToPathArgs(key="ca.crt", path="ca.crt")])),
        ]))


def credentials_mount() -> k8s.core.v1.VolumeMountArgs:
    return k8s.core.v1.VolumeMountArgs(name=CREDENTIALS_VOLUME, mount_path=CREDENTIALS_DIR,
                                       read_only=True)


def declare_role(namespace: pulumi.Input[str], job_name: pulumi.Input[str],
                 account: pulumi.Input[str], labels: dict[str, str],
                 opts: pulumi.ResourceOptions) -> k8s.rbac.v1.RoleBinding:
    """The Role that may patch the one PyTorchJob, bound to the trainer's ServiceAccount."""
    role = k8s.rbac.v1.Role(
        "job-progress-role",
        metadata=k8s.meta.v1.ObjectMetaArgs(name=ROLE, namespace=namespace, labels=labels),
        rules=[k8s.rbac.v1.PolicyRuleArgs(api_groups=["kubeflow.org"], resources=["pytorchjobs"],
                                          resource_names=[job_name], verbs=["patch"])],
        opts=opts)
    return k8s.rbac.v1.RoleBinding(
        "job-progress-binding",
        metadata=k8s.meta.v1.ObjectMetaArgs(name=ROLE, namespace=namespace, labels=labels),
        role_ref=k8s.rbac.v1.RoleRefArgs(api_group="rbac.authorization.k8s.io", kind="Role",
                                         name=role.metadata.name),
        subjects=[k8s.rbac.v1.SubjectArgs(kind="ServiceAccount", name=account,
                                          namespace=namespace)],
        opts=opts)


def read_command(namespace: str, api: str, job: pulumi.Input[str]) -> pulumi.Output[str]:
    """The `kubectl` command that shows how far the run is."""
    if api == "trainjob":
        return pulumi.Output.concat(f"kubectl -n {namespace} get trainjob ", job,
                                    " -o jsonpath='{.status.trainerStatus}'")
    return pulumi.Output.concat(f"kubectl -n {namespace} get pytorchjob ", job,
                                f" -o jsonpath='{{.metadata.annotations.{PROGRESS_ANNOTATION}}}'")
