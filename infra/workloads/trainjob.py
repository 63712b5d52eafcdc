"""The run as a Kubeflow Trainer v2 TrainJob (`trainingApi: trainjob`) on the stack's runtime.

The PyTorchJob's pod template (infra/workloads/training.py) is built once and split between the
two objects Trainer v2 combines into a JobSet, so both APIs run the same pods:

- TrainingRuntime `trainstack-torch` (namespaced, the stack's own): what every run of
  the stack shares. The built-in `torch-distributed` runtime has no JobSet failure policy
  and a TrainJob cannot add one, so this one has `failurePolicy.maxRestarts` with the
  Job's `backoffLimit: 0` and `restartPolicy: Never`: a failed pod fails its Job, and
  JobSet restarts every Job, so every rank restarts and resumes from the last checkpoint
  (the PyTorchJob's runPolicy.backoffLimit, same count). Two failures are told apart
  (`failure_policy`): a pod stopped by a disruption (preemption, a drained or failed node:
  condition DisruptionTarget) counts against nothing and is replaced; a configuration
  error (the trainer's exit status 78 or argparse's 2, trainer.contract.errors) fails its
  Job by the Job's podFailurePolicy, and the JobSet with it, at once: a restart would fail
  the same way. It also holds the pod's identity and security context, its grace period,
  the container's security context and pull policy.
- TrainJob: what shapes this run. `spec.trainer` takes the image, command, env (secrets
  by secretKeyRef), numNodes, numProcPerNode and resourcesPerNode; `runtimePatches` the
  volumes, their mounts and the scheduling (nodeSelector, tolerations).

What Trainer's torch plugin (v2.3.0) injects into container `node`: only PET_NNODES,
PET_NPROC_PER_NODE, PET_NODE_RANK (the Job completion index), PET_MASTER_ADDR
(`<job>-node-0-0.<job>`, the JobSet's headless Service) and PET_MASTER_PORT (29500), no
MASTER_ADDR/RANK/WORLD_SIZE: the command runs torchrun (through trainer.launch), which
reads PET_* and sets the torch env for the trainer. numProcPerNode is set: unset with no
GPU, the plugin starts as many processes per pod as the CPU request. `spec.trainer` is immutable, so a rescale
replaces the TrainJob (a new name, deleted before the new one is created), as with the
PyTorchJob.
"""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.workloads.jobparts import kueue
from trainer.contract.errors import CONFIGURATION_EXITS

API_GROUP = "trainer.kubeflow.org"
API_VERSION = f"{API_GROUP}/v1alpha1"
RUNTIME = "trainstack-torch"
# The replicated job and its container: the torch plugin injects PET_* into container
# `node` of the job whose ancestor label is `trainer` (v2.4 caps job names at 20 chars).
NODE = "node"
ANCESTOR_LABEL = f"{API_GROUP}/trainjob-ancestor-step"
# runtimePatches entries are keyed by their manager (a domain-prefixed path).
PATCH_MANAGER = "trainstack/pulumi"
MASTER_PORT = 29500  # Trainer's ContainerTrainerPort: PET_MASTER_PORT
TORCH_ENV = ("PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK", "PET_MASTER_ADDR",
             "PET_MASTER_PORT")
# The conditions a finished TrainJob carries (what to wait for).
FINISHED = ("Complete", "Failed")
JOBSET_NAME_LABEL = "jobset.sigs.k8s.io/jobset-name"  # on every pod, = the TrainJob's name
COMPLETION_INDEX_LABEL = "batch.kubernetes.io/job-completion-index"  # = PET_NODE_RANK


def command(config_file: str) -> list[str]:
    """torchrun (trainer.launch: torchrun with a worker's configuration error as its own
    exit status) starts numProcPerNode trainer processes and joins the PET_* rendezvous."""
    return ["python", "-m", "trainer.launch", "-m", "trainer", "train", "--config", config_file]


def pod_failure_policy() -> dict[str, Any]:
    """The Job's: a configuration error fails it (reason PodFailurePolicy), a disruption
    is not a failure (the pod is replaced)."""
    return {"rules": [
        {"action": "FailJob", "onExitCodes": {"containerName": NODE, "operator": "In",
                                              "values": list(CONFIGURATION_EXITS)}},
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
    ]}


def failure_policy(max_restarts: int) -> dict[str, Any]:
    """The JobSet's: a Job failed by its podFailurePolicy (a configuration error) fails the
    JobSet; any other failure restarts every Job, up to `max_restarts` times."""
    return {"maxRestarts": max_restarts, "rules": [
        {"name": "ConfigurationError", "action": "FailJobSet",
         "onJobFailureReasons": ["PodFailurePolicy"]}]}


def procs_per_node(gpus: int) -> int:
    """One process per GPU; one per pod on CPU (the trainer uses the pod's CPUs itself)."""
    return max(1, gpus)


def runtime_spec(template: k8s.core.v1.PodTemplateSpecArgs, max_restarts: int
                 ) -> dict[str, Any]:
    """The TrainingRuntime: the template's identity, security and labels, no run's data."""
    pod = template.spec
    (container,) = pod.containers
    # envFrom (MLFLOW_TRACKING_URI from the tracking server's optional ConfigMap) lives in
    # the runtime: spec.trainer takes env only, and it is the same for every run.
    node = k8s.core.v1.ContainerArgs(
        name=NODE, image_pull_policy=container.image_pull_policy,
        security_context=container.security_context, env_from=container.env_from)
    pod_template = k8s.core.v1.PodTemplateSpecArgs(
        metadata=template.metadata,
        spec=k8s.core.v1.PodSpecArgs(
            service_account_name=pod.service_account_name,
            automount_service_account_token=pod.automount_service_account_token,
            security_context=pod.security_context,
            restart_policy="Never",  # a failed pod fails its Job: JobSet restarts all
            termination_grace_period_seconds=pod.termination_grace_period_seconds,
            containers=[node],
        ),
    )
    job = {"backoffLimit": 0, "podFailurePolicy": pod_failure_policy(),
           "template": pod_template}
    return {
        "mlPolicy": {"numNodes": 1, "torch": {}},
        "template": {"spec": {
            "failurePolicy": failure_policy(max_restarts),
            "replicatedJobs": [{
                "name": NODE,
                "replicas": 1,
                "template": {"metadata": {"labels": {ANCESTOR_LABEL: "trainer"}},
                             "spec": job},
            }],
        }},
    }


def trainjob_spec(template: k8s.core.v1.PodTemplateSpecArgs, workers: int, gpus: int
                  ) -> dict[str, Any]:
    """The TrainJob: the template's container (image, command, env, resources) as
    spec.trainer; its volumes and scheduling as a runtime patch."""
    pod = template.spec
    (container,) = pod.containers
    pod_patch = {
        "volumes": pod.volumes,
        "containers": [{"name": NODE, "volumeMounts": container.volume_mounts}],
        "nodeSelector": pod.node_selector,
        "tolerations": pod.tolerations,
    }
    patch = {"replicatedJobs": [{"name": NODE, "template": {
        "spec": {"template": {"spec": {k: v for k, v in pod_patch.items() if v}}}}}]}
    return {
        "runtimeRef": {"apiGroup": API_GROUP, "kind": "TrainingRuntime", "name": RUNTIME},
        "trainer": {
            "image": container.image,
            "command": container.command,
            "env": container.env,
            "numNodes": workers,
            "numProcPerNode": procs_per_node(gpus),
            "resourcesPerNode": container.resources,
        },
        "runtimePatches": [{"manager": PATCH_MANAGER,
                            "trainingRuntimeSpec": {"template": {"spec": patch}}}],
    }


def declare(parent: pulumi.Resource, namespace: pulumi.Input[str],
            template: k8s.core.v1.PodTemplateSpecArgs, name: pulumi.Input[str],
            labels: dict[str, str], workers: int, gpus: int, max_restarts: int,
            depends_on: list[pulumi.Resource], operator: pulumi.Resource | None,
            queue: str | None = None) -> k8s.apiextensions.CustomResource:
    """The runtime (after the operator: its CRD and webhook) and the TrainJob (after
    `depends_on` too; suspended in Kueue's `queue` if given), children of `parent`;
    returns the TrainJob."""
    runtime = k8s.apiextensions.CustomResource(
        "trainingruntime",
        api_version=API_VERSION,
        kind="TrainingRuntime",
        metadata=k8s.meta.v1.ObjectMetaArgs(name=RUNTIME, namespace=namespace, labels=labels),
        spec=runtime_spec(template, max_restarts),
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[operator] if operator else []),
    )
    job_labels, spec = kueue.queued(labels, trainjob_spec(template, workers, gpus), queue,
                                    "trainjob")
    return k8s.apiextensions.CustomResource(
        "trainjob",
        api_version=API_VERSION,
        kind="TrainJob",
        metadata=k8s.meta.v1.ObjectMetaArgs(
            name=name, namespace=namespace, labels=job_labels,
            # As the PyTorchJob, `pulumi up` returns once the job exists. Its deletion is
            # background, not the provider's foreground: Trainer (v2.3, still on main)
            # reconciles a TrainJob whose deletion is pending and recreates the JobSet
            # the garbage collector has just deleted, so a foreground delete loops on new
            # pods until a race ends it (seen for minutes). Gone at once, the TrainJob
            # cannot be reconciled; its pods go after it, and the run lease keeps the next
            # job from training until they have (docs/operations.md, rescale).
            annotations={"pulumi.com/skipAwait": "true",
                         "pulumi.com/deletionPropagationPolicy": "background"},
        ),
        spec=spec,
        opts=pulumi.ResourceOptions(
            parent=parent,
            depends_on=[*depends_on, runtime],
            replace_on_changes=["spec"],
            delete_before_replace=True,
            # A stack switching from the PyTorchJob: its job is this resource's previous
            # state, so it is deleted (delete before replace) before the TrainJob starts.
            aliases=[pulumi.Alias(name="pytorchjob",
                                  type_="kubernetes:kubeflow.org/v1:PyTorchJob")],
        ),
    )
