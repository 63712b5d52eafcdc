"""MLflow tracking server (config `mlflow`): identity, volume, AWS config, Deployment, Service.

Backend store: SQLite on a PVC. Not PostgreSQL: the server has one writer (rank 0 of each
run, a few requests per epoch) and a few readers (the UI, the app); SQLite holds that in
one file that survives a pod restart, with the model registry, and needs no second
server, credentials or backups of its own. The price: one server process (`--workers 1`,
SQLite serializes writers) and one replica (Recreate; the volume is ReadWriteOnce).
PostgreSQL becomes worth it for a highly available server or many concurrent writers.

Artifacts: the server proxies them (clients upload through its REST API, so workloads need
no S3 access for MLflow) into the store's `<prefix>mlflow` bucket through the S3 API. It
reads the store's credentials as files of the store's Secret through boto3's
`credential_process` (AWS_CONFIG_FILE, a ConfigMap without secrets): no secret is an env
var, not even of its own process.

Hardened like every workload: its own ServiceAccount without token, a high non-root uid,
read-only root filesystem (writes: the PVC and /tmp), seccomp, no capabilities, requests
and limits. The Host header is checked (`--allowed-hosts`: the Service's names and
localhost for `kubectl port-forward`), MLflow's guard against DNS rebinding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from infra.workloads import pod, rotation
from infra.workloads.catalog import TRACKING
from infra.workloads.tracking.mlflow_auth import MlflowLogin
from trainer.contract.env import TRACKING_URI_ENV

# The release the trainer's client (mlflow-skinny) and the tests' server are pinned to
# (trainer/requirements.txt, requirements-mlflow-server.txt; a test keeps them equal).
# `-full`: the official image with MLflow's extras, boto3 among them (the plain image
# cannot reach S3). Pinned by release tag, pulled Always: its digest could not be looked
# up where this was written (no registry access); pin it with mlflowImage
# (docs/operations.md, "Images").
MLFLOW_VERSION = "3.17.2"
DEFAULT_IMAGE = f"ghcr.io/mlflow/mlflow:v{MLFLOW_VERSION}-full"
MLFLOW_UID = 10003  # above 10000, not the app's (10001) or MinIO's (10002)
NAME = TRACKING.name
HTTP = TRACKING.port("http")
PORT = HTTP.number
DATA_DIR = "/var/lib/mlflow"  # the PVC: the SQLite database
BACKEND_STORE_URI = f"sqlite:///{DATA_DIR}/mlflow.db"
PVC_NAME = "mlflow-data"
VOLUME_SIZE = "1Gi"  # its database: the runs' params and metrics
CONFIG_MAP = "mlflow-aws-config"
# MLFLOW_TRACKING_URI for the training pods, which read it with `optional: true`: their
# template is the same with and without MLflow, so turning `mlflow` on or off does not
# replace a running PyTorchJob (its pods see the change at their next start).
TRACKING_CONFIG_MAP = "mlflow-tracking"
AWS_CONFIG_DIR = "/etc/mlflow/aws"
CREDENTIALS_DIR = "/etc/mlflow/credentials"  # the store's Secret, as files
CREDENTIALS_DIR_ENV = "TRAINSTACK_S3_CREDENTIALS_DIR"
TMP = pod.tmp("768Mi")  # HOME, the working directory, artifact uploads on their way to S3
# boto3 runs this for credentials (shlex-split, no shell): it prints them as JSON from the
# Secret's files. The directory comes from the env, so the file holds no path of a pod.
CREDENTIAL_PROCESS = (
    'python -c "import json, os; d = os.environ[\'' + CREDENTIALS_DIR_ENV + '\']; '
    "r = lambda k: open(os.path.join(d, k)).read().strip(); "
    "print(json.dumps({'Version': 1, 'AccessKeyId': r('" + pod.ACCESS_KEY_ID + "'), "
    "'SecretAccessKey': r('" + pod.SECRET_ACCESS_KEY + "')}))\""
)
AWS_CONFIG = f"[default]\ncredential_process = {CREDENTIAL_PROCESS}\n"
DEFAULT_REGION = "us-east-1"  # boto3 signs with a region; MinIO's default one


@dataclass
class MlflowArgs:
    namespace: pulumi.Input[str]
    store: pod.StoreRef  # where the artifact bucket is, and the Secret to reach it
    bucket: str  # the artifact bucket's name in the store (`<prefix>mlflow`)
    versions: rotation.SecretVersions  # names the login's Secret by its content
    image: str = DEFAULT_IMAGE
    storage_size: str = VOLUME_SIZE
    storage_class: str | None = None  # None: the cluster's default StorageClass
    depends_on: Sequence[pulumi.Resource] = field(default_factory=list)  # the bucket Job
    login: bool = False  # MLflow's basic-auth app with a generated login (infra/workloads/tracking/mlflow_auth.py)


def allowed_hosts(namespace: str) -> list[str]:
    """Host headers the server answers: its Service's names (with any port) and localhost
    (port-forward). No wildcard before a port: `mlflow.ns.svc.evil.example` must not pass."""
    names = [NAME, f"{NAME}.{namespace}", f"{NAME}.{namespace}.svc",
             f"{NAME}.{namespace}.svc.cluster.local", "localhost", "127.0.0.1"]
    return [host for name in names for host in (name, f"{name}:*")]


def server_command(hosts: pulumi.Input[str], bucket: str, login: bool = False
                   ) -> list[pulumi.Input[str]]:
    """`hosts`: the --allowed-hosts value (allowed_hosts joined by commas)."""
    return ["mlflow", "server", *(["--app-name", "basic-auth"] if login else []),
            "--backend-store-uri", BACKEND_STORE_URI,
            "--artifacts-destination", f"s3://{bucket}/",
            "--host", "0.0.0.0", "--port", str(PORT),
            # SQLite: one writer process (see the module docstring).
            "--workers", "1",
            "--allowed-hosts", hosts]


def tracking_uri(namespace: pulumi.Input[str]) -> pulumi.Output[str]:
    """MLFLOW_TRACKING_URI of the workloads: the Service, in-cluster."""
    return pulumi.Output.concat("http://", NAME, ".", namespace, f".svc:{PORT}")


# Where a user's browser reaches the UI through the exported port-forward command; the
# app links each version to its run there (an Ingress in front of MLflow would change it,
# and is not configurable yet).
UI_URL = f"http://localhost:{PORT}"


def access_hint(namespace: str) -> str:
    return f"kubectl -n {namespace} port-forward svc/{NAME} {PORT}:{PORT}   # {UI_URL}"


def _env(args: MlflowArgs) -> list[k8s.core.v1.EnvVarArgs]:
    values = {
        "HOME": pod.TMP,
        "MLFLOW_S3_ENDPOINT_URL": pod.s3_endpoint_url(args.store.url),
        "AWS_DEFAULT_REGION": args.store.region or DEFAULT_REGION,
        "AWS_CONFIG_FILE": f"{AWS_CONFIG_DIR}/config",
        CREDENTIALS_DIR_ENV: CREDENTIALS_DIR,
        # No background job runner (MLflow's GenAI jobs): nothing here uses it, and it
        # would keep its queue in /dev/shm and run extra processes.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        # No usage reports to MLflow's telemetry service (an outside connection).
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PYTHONUNBUFFERED": "1",
    }
    return [k8s.core.v1.EnvVarArgs(name=k, value=v) for k, v in values.items()]


def _probe(delay: int, failures: int) -> k8s.core.v1.ProbeArgs:
    return k8s.core.v1.ProbeArgs(
        http_get=k8s.core.v1.HTTPGetActionArgs(path="/health", port=HTTP.name),
        initial_delay_seconds=delay, period_seconds=10, timeout_seconds=5,
        failure_threshold=failures)


def _container(args: MlflowArgs, login: MlflowLogin | None) -> k8s.core.v1.ContainerArgs:
    mounts = [
        k8s.core.v1.VolumeMountArgs(name="data", mount_path=DATA_DIR),
        k8s.core.v1.VolumeMountArgs(name="aws-config", mount_path=AWS_CONFIG_DIR,
                                    read_only=True),
        k8s.core.v1.VolumeMountArgs(name="credentials", mount_path=CREDENTIALS_DIR,
                                    read_only=True),
        TMP.mount(),
        *([login.mount()] if login else []),
    ]
    return k8s.core.v1.ContainerArgs(
        name=NAME,
        image=args.image,
        # By digest a node's copy is the image; by tag every start pulls (infra/workloads/image.py).
        image_pull_policy="IfNotPresent" if "@" in args.image else "Always",
        command=server_command(pulumi.Output.from_input(args.namespace).apply(
            lambda ns: ",".join(allowed_hosts(ns))), args.bucket, login is not None),
        working_dir=pod.TMP,  # anything written relative lands in /tmp, not the image
        env=_env(args) + (login.server_env() if login else []),
        ports=[k8s.core.v1.ContainerPortArgs(name=HTTP.name, container_port=PORT)],
        readiness_probe=_probe(10, 3),
        # Generous: the full image imports a lot on a small node.
        liveness_probe=_probe(60, 6),
        resources=k8s.core.v1.ResourceRequirementsArgs(
            # Idle: ~530 MB in two processes (the CLI and its uvicorn worker).
            requests={"cpu": "250m", "memory": "768Mi", "ephemeral-storage": "1Gi"},
            limits={"cpu": "1", "memory": "1536Mi", "ephemeral-storage": "1Gi"},
        ),
        security_context=pod.container_security(MLFLOW_UID),
        volume_mounts=mounts,
    )


def _volumes(args: MlflowArgs, pvc: pulumi.Input[str], config_map: pulumi.Input[str]
             ) -> list[k8s.core.v1.VolumeArgs]:
    return [
        k8s.core.v1.VolumeArgs(
            name="data", persistent_volume_claim=k8s.core.v1.PersistentVolumeClaimVolumeSourceArgs(
                claim_name=pvc)),
        k8s.core.v1.VolumeArgs(
            name="aws-config", config_map=k8s.core.v1.ConfigMapVolumeSourceArgs(name=config_map)),
        k8s.core.v1.VolumeArgs(
            name="credentials",
            secret=k8s.core.v1.SecretVolumeSourceArgs(
                secret_name=args.store.secret_name,
                default_mode=0o440,  # readable by the pod's group (fsGroup) only
                items=[k8s.core.v1.KeyToPathArgs(key=key, path=key)
                       for key in (pod.ACCESS_KEY_ID, pod.SECRET_ACCESS_KEY)])),
    ]


class MlflowServer(pulumi.ComponentResource):
    """`url` is MLFLOW_TRACKING_URI for the workloads; `access` opens the UI from outside."""

    deployment: k8s.apps.v1.Deployment
    url: pulumi.Output[str]
    access: pulumi.Output[str]

    def __init__(self, name: str, args: MlflowArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("trainstack:index:MlflowServer", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        def metadata(object_name: str) -> k8s.meta.v1.ObjectMetaArgs:
            return k8s.meta.v1.ObjectMetaArgs(name=object_name, namespace=args.namespace,
                                              labels=TRACKING.labels)

        account = pod.service_account(TRACKING, args.namespace, child)
        # Named by its content: a release that changes it rolls the server (rotation.py).
        config_map = rotation.versioned_config_map(CONFIG_MAP, CONFIG_MAP, args.namespace,
                                                   TRACKING.labels, {"config": AWS_CONFIG}, child)
        pvc = self._pvc(args, child)
        login = MlflowLogin(args.namespace, args.versions, child) if args.login else None
        volumes = _volumes(args, pvc.metadata.name, config_map.metadata.name)
        # It reads the store's credentials (boto3 keeps them once read) and its login at
        # start: both Secrets are named by their content, so a new value rolls it.
        template = k8s.core.v1.PodTemplateSpecArgs(
            metadata=k8s.meta.v1.ObjectMetaArgs(labels=TRACKING.labels),
            spec=pod.pod_spec(account.metadata.name, [_container(args, login)], scratch=[TMP],
                              volumes=volumes + ([login.volume()] if login else []),
                              uid=MLFLOW_UID))
        self.deployment = k8s.apps.v1.Deployment(
            NAME,
            metadata=metadata(NAME),
            spec=k8s.apps.v1.DeploymentSpecArgs(
                replicas=1,
                # One RWO volume and one SQLite writer: the old pod goes before the new one.
                strategy=k8s.apps.v1.DeploymentStrategyArgs(type="Recreate"),
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels=TRACKING.labels),
                template=template),
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on)),
        )
        k8s.core.v1.Service(
            NAME,
            metadata=metadata(NAME),
            spec=k8s.core.v1.ServiceSpecArgs(
                type="ClusterIP", selector=TRACKING.labels,
                ports=[k8s.core.v1.ServicePortArgs(name=HTTP.name, port=PORT,
                                                   target_port=HTTP.name)]),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.deployment]),
        )
        self.url = tracking_uri(args.namespace)
        k8s.core.v1.ConfigMap(TRACKING_CONFIG_MAP, metadata=metadata(TRACKING_CONFIG_MAP),
                              data={TRACKING_URI_ENV: self.url}, opts=child)
        self.access = pulumi.Output.from_input(args.namespace).apply(access_hint)
        self.ui_url = UI_URL
        self.register_outputs({"url": self.url, "access": self.access})

    @staticmethod
    def _pvc(args: MlflowArgs, opts: pulumi.ResourceOptions) -> k8s.core.v1.PersistentVolumeClaim:
        return k8s.core.v1.PersistentVolumeClaim(
            PVC_NAME,
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=PVC_NAME, namespace=args.namespace, labels=TRACKING.labels,
                # WaitForFirstConsumer: bound only once the pod is scheduled (infra/workloads/store/minio_server.py).
                annotations={"pulumi.com/skipAwait": "true"}),
            spec=k8s.core.v1.PersistentVolumeClaimSpecArgs(
                access_modes=["ReadWriteOnce"],
                storage_class_name=args.storage_class,
                resources=k8s.core.v1.VolumeResourceRequirementsArgs(
                    requests={"storage": args.storage_size})),
            opts=opts,
        )
