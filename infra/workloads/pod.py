"""Typed pod-template pieces every workload shares (env, security, resources, volumes).

All containers run the one trainer image as the non-root user baked into it, reach the
object store through TRAINSTACK_STORE (+ AWS_REGION, TRAINSTACK_BUCKET_PREFIX) and get S3
credentials only by secretKeyRef. Every pod runs under its own ServiceAccount without a
token, with a read-only root filesystem: a process writes only to the emptyDirs its
ContainerSpec lists (Scratch), and WRITABLE_ENV points every cache there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.config.quantities import canonical
from infra.workloads import catalog as workloads
from infra.workloads.catalog import Workload
from trainer.contract.layout import BUCKET_PREFIX_ENV

# The uid/gid created in trainer/Dockerfile; runAsUser makes runAsNonRoot checkable
# even when an image's USER is a name. Above 10000: no clash with a node's own users.
APP_UID = 10001
GPU_RESOURCE = "nvidia.com/gpu"
# The namespace's Pod Security admission labels: every pod the stack or the Training
# Operator creates must meet `restricted`, which container_security/pod_security give; a
# pod that doesn't is refused by the API server, not started with more rights.
POD_SECURITY_LABELS = {
    f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "audit", "warn")
} | {f"pod-security.kubernetes.io/{mode}-version": "latest"
     for mode in ("enforce", "audit", "warn")}
SHM_VOLUME = "dshm"
TMP = "/tmp"
# Where the image's tools write under a read-only root: all below /tmp, an emptyDir in every
# pod. trainer/Dockerfile sets the same values (a test keeps them equal), so `docker run`
# behaves like a pod.
WRITABLE_ENV = {
    "HOME": TMP,  # fontconfig, torch hub and anything else that writes to ~
    "XDG_CACHE_HOME": f"{TMP}/.cache",
    "MPLCONFIGDIR": f"{TMP}/matplotlib",
    "GRADIO_TEMP_DIR": f"{TMP}/gradio",
    "TORCHINDUCTOR_CACHE_DIR": f"{TMP}/torchinductor",
    "TRITON_CACHE_DIR": f"{TMP}/triton",
}
# The keys of every store credentials Secret: the one the stack makes, the one a user names.
ACCESS_KEY_ID = "AWS_ACCESS_KEY_ID"
SECRET_ACCESS_KEY = "AWS_SECRET_ACCESS_KEY"


@dataclass
class StoreRef:
    """Where workloads find the object store and the Secret holding its credentials."""

    url: pulumi.Input[str]  # s3://HOST:PORT or s3s://HOST[:PORT]
    # Keys ACCESS_KEY_ID, SECRET_ACCESS_KEY. The stack's own is named by a digest of its
    # content (infra/workloads/rotation.py): pods that keep running name it, so a new
    # value rolls them.
    secret_name: pulumi.Input[str]
    region: str | None = None  # AWS_REGION
    bucket_prefix: str = ""  # TRAINSTACK_BUCKET_PREFIX
    # That digest when the stack made the Secret (None: the user's Secret).
    version: pulumi.Input[str] | None = None
    # The same credentials under a fixed name, for the Jobs: they run once and must not
    # run again because a password changed (None: `secret_name`, the user's Secret).
    job_secret_name: str | None = None

    def for_jobs(self) -> StoreRef:
        """The ref a Job's pod gets: the fixed-name Secret, by its name only."""
        if self.job_secret_name is None:
            return self
        return replace(self, secret_name=self.job_secret_name, version=None)


def s3_endpoint_url(store_url: pulumi.Input[str]) -> pulumi.Output[str]:
    """An S3 client's endpoint URL (boto3's, MLflow's) for a StoreRef url: s3://HOST:PORT is
    plain HTTP, s3s://HOST[:PORT] is TLS (the TRAINSTACK_STORE contract)."""
    def convert(url: str) -> str:
        scheme, _, host = url.partition("://")
        if scheme not in ("s3", "s3s") or not host:
            raise ValueError(f"store URL {url!r}: s3://HOST:PORT or s3s://HOST[:PORT] expected")
        return f"{'https' if scheme == 's3s' else 'http'}://{host}"

    return pulumi.Output.from_input(store_url).apply(convert)


@dataclass(frozen=True)
class Scratch:
    """A writable emptyDir, capped at `size` (medium Memory: RAM, counted as memory)."""

    name: str
    path: str
    size: str
    medium: str | None = None

    def volume(self) -> k8s.core.v1.VolumeArgs:
        return k8s.core.v1.VolumeArgs(
            name=self.name,
            empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs(medium=self.medium,
                                                           size_limit=self.size))

    def mount(self) -> k8s.core.v1.VolumeMountArgs:
        return k8s.core.v1.VolumeMountArgs(name=self.name, mount_path=self.path)


def tmp(size: str) -> Scratch:
    """/tmp: temp files and every cache of WRITABLE_ENV."""
    return Scratch("tmp", TMP, size)


@dataclass
class ContainerSpec:
    """What differs between workloads: the rest of the pod is built the same way."""

    name: str
    image: pulumi.Input[str]
    command: Sequence[str]
    store: StoreRef
    cpu: str
    memory: str
    cpu_limit: str | None = None  # default: requests == limits (Guaranteed QoS)
    memory_limit: str | None = None
    ephemeral_storage: str | None = None  # request = limit (emptyDirs on disk, logs)
    gpus: int = 0
    scratch: Sequence[Scratch] = ()  # the only writable paths
    env: dict[str, str] = field(default_factory=dict)
    secret_env: Sequence[k8s.core.v1.EnvVarArgs] = ()  # by secretKeyRef (secret_env())
    field_env: dict[str, str] = field(default_factory=dict)  # name -> downward API fieldPath
    env_from: Sequence[k8s.core.v1.EnvFromSourceArgs] = ()  # every key of a ConfigMap/Secret
    ports: Sequence[k8s.core.v1.ContainerPortArgs] = ()
    volume_mounts: Sequence[k8s.core.v1.VolumeMountArgs] = ()
    readiness_probe: k8s.core.v1.ProbeArgs | None = None
    liveness_probe: k8s.core.v1.ProbeArgs | None = None
    image_pull_policy: str = "IfNotPresent"


def secret_env(name: str, secret: pulumi.Input[str], key: str) -> k8s.core.v1.EnvVarArgs:
    """An env var read from a Secret's key by the kubelet: the value never enters the spec."""
    return k8s.core.v1.EnvVarArgs(
        name=name,
        value_from=k8s.core.v1.EnvVarSourceArgs(
            secret_key_ref=k8s.core.v1.SecretKeySelectorArgs(name=secret, key=key)
        ),
    )


def store_env(store: StoreRef) -> list[k8s.core.v1.EnvVarArgs]:
    """TRAINSTACK_STORE, region, bucket prefix + AWS credentials by reference only."""
    env = [
        k8s.core.v1.EnvVarArgs(name="TRAINSTACK_STORE", value=store.url),
        secret_env(ACCESS_KEY_ID, store.secret_name, ACCESS_KEY_ID),
        secret_env(SECRET_ACCESS_KEY, store.secret_name, SECRET_ACCESS_KEY),
    ]
    if store.region:
        env.append(k8s.core.v1.EnvVarArgs(name="AWS_REGION", value=store.region))
    if store.bucket_prefix:
        env.append(k8s.core.v1.EnvVarArgs(name=BUCKET_PREFIX_ENV, value=store.bucket_prefix))
    return env


def credentials(access_key: pulumi.Input[str], secret_key: pulumi.Input[str]
                ) -> pulumi.Output[dict[str, str]]:
    """A store credentials Secret's stringData (a secret Output: never shown)."""
    return pulumi.Output.secret(pulumi.Output.all(access_key, secret_key).apply(
        lambda keys: {ACCESS_KEY_ID: keys[0], SECRET_ACCESS_KEY: keys[1]}))


def container_security(uid: int = APP_UID) -> k8s.core.v1.SecurityContextArgs:
    return k8s.core.v1.SecurityContextArgs(
        run_as_non_root=True,
        run_as_user=uid,
        run_as_group=uid,
        read_only_root_filesystem=True,
        allow_privilege_escalation=False,
        capabilities=k8s.core.v1.CapabilitiesArgs(drop=["ALL"]),
        seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault"),
    )


def pod_security(uid: int = APP_UID) -> k8s.core.v1.PodSecurityContextArgs:
    # fsGroup makes mounted volumes (MinIO's PVC, emptyDirs) writable by the non-root user.
    return k8s.core.v1.PodSecurityContextArgs(
        run_as_non_root=True, run_as_user=uid, run_as_group=uid, fs_group=uid,
        seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault"),
    )


def service_account(workload: Workload, namespace: pulumi.Input[str],
                    opts: pulumi.ResourceOptions) -> k8s.core.v1.ServiceAccount:
    """A workload's own identity. No token is mounted: no workload calls the Kubernetes
    API, so a compromised pod holds no credential for it."""
    return k8s.core.v1.ServiceAccount(
        workload.service_account,
        metadata=k8s.meta.v1.ObjectMetaArgs(name=workload.service_account,
                                            namespace=namespace, labels=workload.labels),
        automount_service_account_token=False,
        opts=opts,
    )


def pod_spec(account: pulumi.Input[str], containers: list[k8s.core.v1.ContainerArgs], *,
             scratch: Sequence[Scratch] = (), volumes: Sequence[k8s.core.v1.VolumeArgs] = (),
             uid: int = APP_UID, **extra: Any) -> k8s.core.v1.PodSpecArgs:
    """Every pod: its workload's ServiceAccount (`account`: the object's name, so the pod
    waits for it), no token, non-root with seccomp, the scratch emptyDirs."""
    all_volumes = [s.volume() for s in scratch] + list(volumes)
    return k8s.core.v1.PodSpecArgs(
        service_account_name=account,
        automount_service_account_token=False,
        security_context=pod_security(uid),
        containers=containers,
        volumes=all_volumes or None,
        **extra,
    )


def resources(spec: ContainerSpec) -> k8s.core.v1.ResourceRequirementsArgs:
    requests: dict[str, Any] = {"cpu": spec.cpu, "memory": spec.memory}
    limits: dict[str, Any] = {
        "cpu": spec.cpu_limit or spec.cpu,
        "memory": spec.memory_limit or spec.memory,
    }
    if spec.ephemeral_storage:
        requests["ephemeral-storage"] = limits["ephemeral-storage"] = spec.ephemeral_storage
    if spec.gpus > 0:
        # Extended resources: the scheduler needs the limit; a request must equal it.
        requests[GPU_RESOURCE] = str(spec.gpus)
        limits[GPU_RESOURCE] = str(spec.gpus)
    # As the server writes them back: a TrainJob re-applied with `6144Mi` where the
    # server keeps `6Gi` is refused (its spec.trainer is immutable).
    requests, limits = ({k: canonical(v) if isinstance(v, str) else v for k, v in d.items()}
                        for d in (requests, limits))
    return k8s.core.v1.ResourceRequirementsArgs(requests=requests, limits=limits)


def container(spec: ContainerSpec) -> k8s.core.v1.ContainerArgs:
    extra = [k8s.core.v1.EnvVarArgs(name=k, value=v)
             for k, v in {**WRITABLE_ENV, **spec.env}.items()]
    mounts = [s.mount() for s in spec.scratch] + list(spec.volume_mounts)
    return k8s.core.v1.ContainerArgs(
        name=spec.name,
        image=spec.image,
        image_pull_policy=spec.image_pull_policy,
        command=list(spec.command),
        env=store_env(spec.store) + extra + list(spec.secret_env) + [
            k8s.core.v1.EnvVarArgs(name=name, value_from=k8s.core.v1.EnvVarSourceArgs(
                field_ref=k8s.core.v1.ObjectFieldSelectorArgs(field_path=path)))
            for name, path in spec.field_env.items()],
        env_from=list(spec.env_from) or None,
        ports=list(spec.ports) or None,
        resources=resources(spec),
        security_context=container_security(),
        volume_mounts=mounts or None,
        readiness_probe=spec.readiness_probe,
        liveness_probe=spec.liveness_probe,
    )


def scheduling(
    gpus: int, node_selector: dict[str, str], tolerations: list[dict[str, Any]]
) -> dict[str, Any]:
    """nodeSelector/tolerations kwargs for PodSpecArgs: user's, plus the GPU taint toleration."""
    tols = [
        k8s.core.v1.TolerationArgs(
            key=t.get("key"),
            operator=t.get("operator"),
            value=t.get("value"),
            effect=t.get("effect"),
            toleration_seconds=t.get("tolerationSeconds"),
        )
        for t in tolerations
    ]
    if gpus > 0 and not any(t.get("key") == GPU_RESOURCE for t in tolerations):
        # GPU node pools are commonly tainted nvidia.com/gpu:NoSchedule (GKE, AKS, EKS).
        tols.append(
            k8s.core.v1.TolerationArgs(key=GPU_RESOURCE, operator="Exists", effect="NoSchedule")
        )
    return {"node_selector": node_selector or None, "tolerations": tols or None}


def shm(size: str) -> Scratch:
    """A RAM-backed /dev/shm: the container default (64Mi) starves DataLoader workers/NCCL."""
    return Scratch(SHM_VOLUME, "/dev/shm", size, medium="Memory")


def labels(component: str) -> dict[str, str]:
    return workloads.labels(component)


def job(
    name: str,
    namespace: pulumi.Input[str],
    workload: Workload,
    spec: ContainerSpec,
    opts: pulumi.ResourceOptions,
    backoff_limit: int = 4,
) -> k8s.batch.v1.Job:
    """A one-shot Job (buckets, ingest) under the workload's own ServiceAccount:
    pulumi-kubernetes waits for it to complete, up to the create/update custom timeout in
    ``opts`` (its default is 10 minutes). Its pod template is immutable, so a change
    replaces it under the same name: the old Job is deleted first (created first, the new
    one would fail with "already exists" and be retried)."""
    account = service_account(workload, namespace, pulumi.ResourceOptions(parent=opts.parent))
    return k8s.batch.v1.Job(
        name,
        metadata=k8s.meta.v1.ObjectMetaArgs(name=name, namespace=namespace,
                                            labels=workload.labels),
        spec=k8s.batch.v1.JobSpecArgs(
            backoff_limit=backoff_limit,
            template=k8s.core.v1.PodTemplateSpecArgs(
                metadata=k8s.meta.v1.ObjectMetaArgs(labels=workload.labels),
                spec=pod_spec(account.metadata.name, [container(spec)], scratch=spec.scratch,
                              restart_policy="OnFailure"),
            ),
        ),
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(
            delete_before_replace=True)),
    )
