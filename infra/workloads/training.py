"""Training: train.json ConfigMap, the dataset ingest Job and the PyTorchJob (or TrainJob),
suspended in Kueue's queue with `queue` (their companions: infra/workloads/jobparts).

The PyTorchJob is replaced, never patched: the operator does not reconcile a running
job's replica counts, resources or pod template, so its name carries a hash of everything
that shapes the run (workers, resources, hyperparameters, the image, the dataset source,
the version of the store credentials the stack made) and any spec change deletes and
recreates it. A new name is also what makes a GitOps tool (renderYamlTo) start a new job,
and a TrainJob's JobSet a new one (its old pods may still be going: infra/workloads/trainjob.py).
The trainer resumes from its newest checkpoint (run_id ignores workers/resources).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.config.values import quantity_bytes
from infra.workloads import pod, trainjob
from infra.workloads.catalog import TRAINER
from infra.workloads.jobparts import ingest, kueue, progress
from infra.workloads.tracking import mlflow_auth
from infra.workloads.tracking.mlflow_server import TRACKING_CONFIG_MAP
from trainer.contract.env import CACHE_BYTES_ENV, CACHE_DIR_ENV, POD_GPUS_ENV

CONFIG_DIR = "/etc/trainstack"
CONFIG_FILE = f"{CONFIG_DIR}/train.json"
CONFIG_MAP = "trainstack-train"
# The operator's default port, under the name it looks up (the Master's MASTER_PORT).
MASTER_PORT = TRAINER.port("pytorchjob-port")
# /tmp of a training pod: matplotlib's and the compilers' caches, the figures it publishes.
TRAIN_TMP_SIZE = "2Gi"
DATA_CACHE_DIR = "/data-cache"
TRAINJOB_TYPE = f"kubernetes:{trainjob.API_VERSION}:TrainJob"
# SIGTERM to the end: the ranks finish their step and rank 0 writes a checkpoint within it.
GRACE_PERIOD_S = 30


@dataclass
class TrainingArgs:
    namespace: pulumi.Input[str]
    image: pulumi.Input[str]
    store: pod.StoreRef
    train_config: dict[str, Any]  # the train.json content (hyperparameters only)
    workers: int
    gpus_per_worker: int
    cpu: str
    memory: str
    dataset: str
    ingest_source: str | None = None  # None: nothing to ingest (digits), or:
    ingest_source_secret: str | None = None  # a Secret with the URL (key DATASET_SOURCE_ENV)
    ingest_timeout: str = "30m"  # how long `pulumi up` waits for the ingest Job
    ingest_storage: str = "4Gi"  # the ingest Job's ephemeral storage (download + unpacked)
    data_cache_size: str = "4Gi"  # each training pod's read-ahead of dataset shards (emptyDir)
    image_pull_policy: str = "IfNotPresent"
    backoff_limit: int = 3
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    # Ready before the ingest Job and the PyTorchJob (bucket Job, image).
    depends_on: Sequence[pulumi.Resource] = ()
    # Ready before the PyTorchJob only: the operator (its admission webhook).
    operator: pulumi.Resource | None = None
    # The MLflow server (config `mlflow`), ready before the PyTorchJob. Its pods read
    # MLFLOW_TRACKING_URI from the server's optional ConfigMap, so their template does not
    # depend on it (docs/operations.md, "Experiment tracking").
    tracking: pulumi.Resource | None = None
    api: str = "pytorchjob"  # config trainingApi: pytorchjob or trainjob
    queue: str | None = None  # Kueue's LocalQueue (config queue): the job waits there
    # The stack's own Kueue objects (queueQuota), ready before the job.
    queue_objects: pulumi.Resource | None = None
    job_progress: bool = False  # a PyTorchJob's rank 0 annotates the job (progress.py)
    env: dict[str, str] = field(default_factory=dict)  # more env of the training container


def job_name(args: TrainingArgs, image: str, credentials: str | None = None) -> str:
    """`train-<model>-<dataset>-<hash>`: a new name whenever the run's shape changes.

    The dataset source is in the hash: a new `datasetSource` re-runs the ingest Job and
    the job must start again after it, on the new data. So is `credentials`, the version
    of the store credentials the stack made (infra/workloads/rotation.py): the ranks read
    them at start, so a new password restarts the job, which resumes from its checkpoint
    (with the user's Secret, None: that one's rotation is the user's restart).
    """
    shape = {
        "workers": args.workers,
        "gpus": args.gpus_per_worker,
        "cpu": args.cpu,
        "memory": args.memory,
        "train": args.train_config,
        "image": image,
        "data": args.ingest_source or (
            f"secret:{args.ingest_source_secret}" if args.ingest_source_secret else None),
        # Only when there is one: a name that stays the same for the user's Secret.
        **({"credentials": credentials} if credentials is not None else {}),
        # Another queue is another job: Kueue refuses a new queue for an admitted one.
        **({"queue": args.queue} if args.queue is not None else {}),
    }
    digest = hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:8]
    cfg = args.train_config
    return f"train-{cfg['model']}-{cfg['dataset']}-{digest}"


def train_command(gpus: int) -> list[str]:
    base = ["-m", "trainer", "train", "--config", CONFIG_FILE]
    if gpus <= 1:
        return ["python", *base]
    # One process per GPU. torchrun must join the operator's rendezvous: the operator
    # injects WORLD_SIZE (= pods, nprocPerNode left unset), RANK, MASTER_ADDR/PORT;
    # Kubernetes expands $(VAR) from the container env.
    return [
        "torchrun",
        f"--nproc_per_node={gpus}",
        "--nnodes=$(WORLD_SIZE)",
        "--node_rank=$(RANK)",
        "--master_addr=$(MASTER_ADDR)",
        "--master_port=$(MASTER_PORT)",
        *base,
    ]


def train_storage(args: TrainingArgs) -> str:
    """A training pod's ephemeral storage: /tmp and the data cache, in MiB (rounded up)."""
    return pods_storage(args.data_cache_size)


def pods_storage(data_cache_size: str, pods: int = 1) -> str:
    """The ephemeral storage `pods` training pods request (Kueue's quota counts it)."""
    total = quantity_bytes(TRAIN_TMP_SIZE) + quantity_bytes(data_cache_size)
    return f"{-(-total // 2**20) * pods}Mi"


def data_cache(args: TrainingArgs) -> pod.Scratch:
    """The emptyDir a training pod reads dataset shards ahead into (trainer.data.streaming.cache)."""
    return pod.Scratch("data-cache", DATA_CACHE_DIR, args.data_cache_size)


def train_env(args: TrainingArgs) -> dict[str, pulumi.Input[str]]:
    # No OMP_NUM_THREADS: the trainer sizes its thread pool from the pod's cgroup CPU quota
    # divided by its local processes (torchrun); a fixed value here would give every torchrun
    # process all the pod's cores and truncate fractional CPUs ("1500m") to 1.
    env: dict[str, pulumi.Input[str]] = {
        "PYTHONUNBUFFERED": "1",
        CACHE_DIR_ENV: DATA_CACHE_DIR,
        # A tenth below the emptyDir's sizeLimit: the kubelet evicts a pod that passes it.
        CACHE_BYTES_ENV: str(quantity_bytes(args.data_cache_size) * 9 // 10),
    }
    env.update(args.env)  # the promotion gate's settings (infra/workloads/retrain.py)
    if args.gpus_per_worker > 0:
        env["NCCL_DEBUG"] = "WARN"  # NCCL is the backend on GPUs: surface its errors
        # The trainer stops at once if torch sees fewer (a CPU build of the image) rather
        # than train on the CPU with the GPUs idle.
        env[POD_GPUS_ENV] = str(args.gpus_per_worker)
    return env


def tracking_env() -> list[k8s.core.v1.EnvFromSourceArgs]:
    """MLFLOW_TRACKING_URI from the MLflow server's ConfigMap, when it exists: rank 0 logs
    the run there."""
    return [k8s.core.v1.EnvFromSourceArgs(config_map_ref=k8s.core.v1.ConfigMapEnvSourceArgs(
        name=TRACKING_CONFIG_MAP, optional=True)), *mlflow_auth.client_env()]


def pod_template(
    args: TrainingArgs, config_map: pulumi.Input[str], account: pulumi.Input[str],
    job: pulumi.Input[str] = "",
) -> k8s.core.v1.PodTemplateSpecArgs:
    """The one pod template used by Master and Worker replicas (of PyTorchJob `job`)."""
    config_mount = k8s.core.v1.VolumeMountArgs(
        name="config", mount_path=CONFIG_DIR, read_only=True
    )
    v1 = args.api == "pytorchjob"
    config_volume = k8s.core.v1.VolumeArgs(
        name="config", config_map=k8s.core.v1.ConfigMapVolumeSourceArgs(name=config_map)
    )
    # A PyTorchJob's rank 0 reports its progress on the job (a TrainJob's: Trainer's way).
    annotates = v1 and args.job_progress
    mounts, volumes = ([config_mount, progress.credentials_mount()],
                       [config_volume, progress.credentials_volume()]) if annotates \
        else ([config_mount], [config_volume])
    spec = pod.ContainerSpec(
        # The operator finds the training container by its name (v1 "pytorch", v2 "node").
        name="pytorch" if v1 else trainjob.NODE,
        image=args.image,
        image_pull_policy=args.image_pull_policy,
        command=(train_command(args.gpus_per_worker) if v1
                 else trainjob.command(CONFIG_FILE)),
        store=args.store,
        cpu=args.cpu,
        memory=args.memory,
        gpus=args.gpus_per_worker,
        env=train_env(args),
        # By reference, after the plain env: the job's name from the pod's label.
        secret_env=progress.env(args.namespace) if annotates else [],
        env_from=tracking_env(),
        # Trainer v2's torch plugin adds its own port (PET_MASTER_PORT).
        ports=[k8s.core.v1.ContainerPortArgs(name=MASTER_PORT.name,
                                             container_port=MASTER_PORT.number)] if v1 else [],
        ephemeral_storage=train_storage(args),
        scratch=[pod.tmp(TRAIN_TMP_SIZE), pod.shm(args.memory), data_cache(args)],
        volume_mounts=mounts,
    )
    # The store's credentials are env vars, read at start: a new value is a new Secret
    # name here and in the job's name, so the job restarts (it resumes from its
    # checkpoint), or its next upload would be refused.
    return k8s.core.v1.PodTemplateSpecArgs(
        metadata=k8s.meta.v1.ObjectMetaArgs(labels=TRAINER.labels),
        spec=pod.pod_spec(
            account, [pod.container(spec)], scratch=spec.scratch, volumes=volumes,
            termination_grace_period_seconds=GRACE_PERIOD_S,
            **pod.scheduling(args.gpus_per_worker, args.node_selector, args.tolerations),
        ),
    )


def pytorchjob_spec(args: TrainingArgs, config_map: pulumi.Input[str],
                    account: pulumi.Input[str], job: pulumi.Input[str] = "") -> dict[str, Any]:
    template = pod_template(args, config_map, account, job)
    replicas = {"Master": 1, "Worker": args.workers - 1}
    return {
        "pytorchReplicaSpecs": {
            kind: {"replicas": count, "restartPolicy": "OnFailure", "template": template}
            for kind, count in replicas.items()
            if count > 0  # workers == 1: a Master alone, no Worker key at all
        },
        "runPolicy": {"backoffLimit": args.backoff_limit, "cleanPodPolicy": "None"},
    }


class Training(pulumi.ComponentResource):
    job_name: pulumi.Output[str]

    def __init__(self, name: str, args: TrainingArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("trainstack:index:Training", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        config_map = k8s.core.v1.ConfigMap(
            "train-config",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=CONFIG_MAP, namespace=args.namespace, labels=pod.labels("trainer")
            ),
            data={"train.json": json.dumps(args.train_config, indent=2, sort_keys=True)},
            opts=child,
        )
        account = pod.service_account(TRAINER, args.namespace, child)
        deps: list[pulumi.Resource] = list(args.depends_on)
        if args.operator is not None:
            deps.append(args.operator)
        if args.tracking is not None:
            deps.append(args.tracking)
        if args.queue_objects is not None:
            deps.append(args.queue_objects)
        if args.ingest_source is not None or args.ingest_source_secret is not None:
            deps.append(ingest.declare(args, self))
        self.job_name = pulumi.Output.all(args.image, args.store.version).apply(
            lambda got: job_name(args, *got))
        if args.api == "trainjob":
            self.job = trainjob.declare(
                self, args.namespace, pod_template(args, config_map.metadata.name,
                                                   account.metadata.name),
                self.job_name, pod.labels("trainer"), args.workers, args.gpus_per_worker,
                args.backoff_limit, deps, args.operator, args.queue)
        else:
            self.job = self._pytorchjob(args, config_map, account, deps)
        self.register_outputs({"job_name": self.job_name, "config_map": config_map.metadata.name})

    def _pytorchjob(self, args: TrainingArgs, config_map: k8s.core.v1.ConfigMap,
                    account: k8s.core.v1.ServiceAccount, deps: list[pulumi.Resource]
                    ) -> k8s.apiextensions.CustomResource:
        if args.job_progress:  # rank 0 may patch this job's progress annotation, before it
            deps = [*deps, progress.declare_role(
                args.namespace, self.job_name, account.metadata.name, pod.labels("trainer"),
                pulumi.ResourceOptions(parent=self))]
        labels, spec = kueue.queued(pod.labels("trainer"), pytorchjob_spec(
            args, config_map.metadata.name, account.metadata.name, self.job_name),
            args.queue, args.api)
        return k8s.apiextensions.CustomResource(
            "pytorchjob",
            api_version="kubeflow.org/v1",
            kind="PyTorchJob",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=self.job_name, namespace=args.namespace, labels=labels,
                # `pulumi up` returns once the job exists, even with PULUMI_K8S_AWAIT_ALL:
                # training takes hours. Its deletion is still awaited (skipAwait does not
                # cover a custom resource's delete), so a replaced job's pods are gone before
                # the new job starts.
                annotations={"pulumi.com/skipAwait": "true"},
            ),
            spec=spec,
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=deps,
                # Any spec change replaces the job (delete first: two runs must never
                # write the same checkpoints at once).
                replace_on_changes=["spec"],
                delete_before_replace=True,
                # A stack switching back from the TrainJob deletes it first (trainjob.py).
                aliases=[pulumi.Alias(name="trainjob", type_=TRAINJOB_TYPE)],
            ),
        )
