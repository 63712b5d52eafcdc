"""MinIO: the in-cluster S3 store (credentials Secret, PVC, Deployment, Service).

Only declared without `storeEndpoint`. Its root credentials are the store credentials
every workload reads: Secrets the stack makes (generated or `minioRootPassword`), or the
existing one `storeCredentialsSecret` names (required in render mode). The stack's are two
with the same content (infra/workloads/rotation.py): `minio-credentials-<digest>`, which
MinIO and the clients that keep running read (a new password rolls them), and
`minio-credentials`, which the Jobs and people read. MinIO reads them as files
(MINIO_ROOT_*_FILE), not env vars; it runs as a high non-root uid with a read-only root
filesystem: it writes only to /data (the PVC) and /tmp (certs dir, HOME).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from infra.workloads import pod, rotation
from infra.workloads.catalog import STORE

# Pinned: a MinIO server release (the last community image with the console), by the
# digest of its multi-platform index. Not pulled here (no registry in this project's
# build): the same digest for this tag on quay.io and docker.io is published by many
# independent projects that pin it (docs/operations.md, "Images").
MINIO_TAG = "RELEASE.2025-04-22T22-12-26Z"
MINIO_DIGEST = "sha256:a1ea29fa28355559ef137d71fc570e508a214ec84ff8083e39bc5428980b015e"
MINIO_IMAGE = f"quay.io/minio/minio:{MINIO_TAG}@{MINIO_DIGEST}"
# Any uid works with a writable /data and --certs-dir; above 10000, and not the app's.
MINIO_UID = 10002
API = STORE.port("api")
CONSOLE = STORE.port("console")
API_PORT = API.number
CONSOLE_PORT = CONSOLE.number
SERVICE_NAME = "minio"
SECRET_NAME = "minio-credentials"
PVC_NAME = "minio-data"
ROOT_USER = "trainstack-admin"
CREDENTIALS_DIR = "/etc/minio/credentials"  # the Secret, as files MinIO reads
ROOT_USER_FILE = f"{CREDENTIALS_DIR}/root-user"
ROOT_PASSWORD_FILE = f"{CREDENTIALS_DIR}/root-password"
TMP = pod.tmp("64Mi")  # HOME and --certs-dir (MinIO creates certs/CAs there)


@dataclass
class MinIOArgs:
    namespace: pulumi.Input[str]
    storage_size: str
    versions: rotation.SecretVersions  # names the stack's Secret by its content
    storage_class: str | None = None
    root_password: pulumi.Input[str] | None = None  # secret; generated when None
    credentials_secret: str | None = None  # an existing Secret instead of the stack's
    bucket_prefix: str = ""  # what every workload's store ref carries


class MinIO(pulumi.ComponentResource):
    """`store` is what workloads need; `ready` are the objects to wait for before use."""

    store: pod.StoreRef
    endpoint: pulumi.Output[str]
    ready: list[pulumi.Resource]

    def __init__(self, name: str, args: MinIOArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("trainstack:index:MinIO", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        version, job_secret, ready = None, None, []
        if args.credentials_secret:
            secret_name: pulumi.Input[str] = args.credentials_secret
        else:
            secret, version, stable = self._secrets(args, child)
            secret_name, job_secret, ready = secret.metadata.name, SECRET_NAME, [stable]
        pvc = self._pvc(args, child)
        account = pod.service_account(STORE, args.namespace, child)
        deployment = self._deployment(args, secret_name, pvc, account, child)
        service = self._service(args, child)
        host = pulumi.Output.concat(SERVICE_NAME, ".", args.namespace, ".svc")
        self.endpoint = pulumi.Output.concat(host, f":{API_PORT}")
        self.store = pod.StoreRef(url=pulumi.Output.concat("s3://", self.endpoint),
                                  secret_name=secret_name, bucket_prefix=args.bucket_prefix,
                                  version=version, job_secret_name=job_secret)
        self.ready = [deployment, service, *ready]
        self.register_outputs({"endpoint": self.endpoint, "secret_name": secret_name})

    def _secrets(self, args: MinIOArgs, opts: pulumi.ResourceOptions
                 ) -> tuple[k8s.core.v1.Secret, pulumi.Output[str], k8s.core.v1.Secret]:
        """The stack's Secrets (versioned, then fixed-name) and the version's digest."""
        password = args.root_password
        if password is None:
            password = random.RandomPassword(
                "minio-root-password", length=32, special=False, opts=opts
            ).result
        data, labels = pod.credentials(ROOT_USER, password), pod.labels("minio")
        # The fixed-name one keeps the Pulumi name of the stack's first Secret.
        stable = rotation.stable_secret(SECRET_NAME, args.namespace, labels, data, opts)
        secret, version = rotation.versioned_secret(
            SECRET_NAME + rotation.VERSIONED_SUFFIX, SECRET_NAME, args.namespace, labels, data,
            args.versions, opts)
        return secret, version, stable

    def _pvc(self, args: MinIOArgs, opts: pulumi.ResourceOptions):
        return k8s.core.v1.PersistentVolumeClaim(
            PVC_NAME,
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=PVC_NAME,
                namespace=args.namespace,
                labels=STORE.labels,
                # With a WaitForFirstConsumer StorageClass (most clouds' default) the claim
                # stays Pending until MinIO's pod is scheduled, and that pod is created only
                # after this claim: awaiting "Bound" here would deadlock. Deleting it is
                # still awaited (skipAwait does not apply to a PVC's deletion).
                annotations={"pulumi.com/skipAwait": "true"},
            ),
            spec=k8s.core.v1.PersistentVolumeClaimSpecArgs(
                access_modes=["ReadWriteOnce"],
                storage_class_name=args.storage_class,
                resources=k8s.core.v1.VolumeResourceRequirementsArgs(
                    requests={"storage": args.storage_size}
                ),
            ),
            opts=opts,
        )

    def _deployment(self, args, secret_name, pvc, account, opts) -> k8s.apps.v1.Deployment:
        data = k8s.core.v1.VolumeArgs(
            name="data",
            persistent_volume_claim=k8s.core.v1.PersistentVolumeClaimVolumeSourceArgs(
                claim_name=pvc.metadata.name
            ),
        )
        credentials = k8s.core.v1.VolumeArgs(
            name="credentials",
            secret=k8s.core.v1.SecretVolumeSourceArgs(
                secret_name=secret_name,
                # Readable by the pod's group (fsGroup) only. Both keys must exist: a missing
                # file would make MinIO fall back to its well-known default credentials.
                default_mode=0o440,
                items=[k8s.core.v1.KeyToPathArgs(key=pod.ACCESS_KEY_ID, path="root-user"),
                       k8s.core.v1.KeyToPathArgs(key=pod.SECRET_ACCESS_KEY,
                                                 path="root-password")],
            ),
        )
        return k8s.apps.v1.Deployment(
            "minio",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name="minio", namespace=args.namespace, labels=STORE.labels
            ),
            spec=k8s.apps.v1.DeploymentSpecArgs(
                replicas=1,
                # One RWO volume: the old pod must release it before the new one starts.
                strategy=k8s.apps.v1.DeploymentStrategyArgs(type="Recreate"),
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels=STORE.labels),
                template=k8s.core.v1.PodTemplateSpecArgs(
                    # MinIO reads its root credentials once, at start: a new password is a
                    # new Secret name here, so MinIO restarts with it.
                    metadata=k8s.meta.v1.ObjectMetaArgs(labels=STORE.labels),
                    spec=pod.pod_spec(account.metadata.name, [_server_container()],
                                      scratch=[TMP], volumes=[data, credentials],
                                      uid=MINIO_UID),
                ),
            ),
            opts=opts,
        )

    def _service(self, args: MinIOArgs, opts: pulumi.ResourceOptions) -> k8s.core.v1.Service:
        return k8s.core.v1.Service(
            "minio",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=SERVICE_NAME, namespace=args.namespace, labels=STORE.labels
            ),
            spec=k8s.core.v1.ServiceSpecArgs(
                type="ClusterIP",
                selector=STORE.labels,
                ports=[k8s.core.v1.ServicePortArgs(name=p.name, port=p.number, target_port=p.name)
                       for p in (API, CONSOLE)],
            ),
            opts=opts,
        )


def _server_container() -> k8s.core.v1.ContainerArgs:
    def probe(path: str, delay: int) -> k8s.core.v1.ProbeArgs:
        return k8s.core.v1.ProbeArgs(
            http_get=k8s.core.v1.HTTPGetActionArgs(path=path, port=API_PORT),
            initial_delay_seconds=delay,
            period_seconds=10,
        )

    return k8s.core.v1.ContainerArgs(
        name="minio",
        image=MINIO_IMAGE,
        # --certs-dir: the default (~/.minio/certs) is in the read-only image.
        args=["server", "/data", "--console-address", f":{CONSOLE_PORT}",
              "--certs-dir", f"{pod.TMP}/minio-certs"],
        env=[
            k8s.core.v1.EnvVarArgs(name="MINIO_ROOT_USER_FILE", value=ROOT_USER_FILE),
            k8s.core.v1.EnvVarArgs(name="MINIO_ROOT_PASSWORD_FILE", value=ROOT_PASSWORD_FILE),
            k8s.core.v1.EnvVarArgs(name="HOME", value=pod.TMP),
        ],
        ports=[k8s.core.v1.ContainerPortArgs(name=p.name, container_port=p.number)
               for p in (API, CONSOLE)],
        readiness_probe=probe("/minio/health/ready", 5),
        liveness_probe=probe("/minio/health/live", 15),
        resources=k8s.core.v1.ResourceRequirementsArgs(
            requests={"cpu": "250m", "memory": "512Mi", "ephemeral-storage": "128Mi"},
            limits={"cpu": "1", "memory": "1Gi", "ephemeral-storage": "128Mi"},
        ),
        security_context=pod.container_security(MINIO_UID),
        volume_mounts=[
            k8s.core.v1.VolumeMountArgs(name="data", mount_path="/data"),
            k8s.core.v1.VolumeMountArgs(name="credentials", mount_path=CREDENTIALS_DIR,
                                        read_only=True),
            TMP.mount(),
        ],
    )
