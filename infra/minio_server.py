"""MinIO: the in-cluster S3 store (credentials Secret, PVC, Deployment, Service).

Only declared without `storeEndpoint`. Its root credentials are the store credentials
every workload reads: a Secret the stack makes (generated or `minioRootPassword`), or the
existing one `storeCredentialsSecret` names (required in render mode).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from infra import pod

# Pinned: a MinIO server release by tag (the last community image with the console).
MINIO_IMAGE = "quay.io/minio/minio:RELEASE.2025-04-22T22-12-26Z"
MINIO_UID = 1000
API_PORT = 9000
CONSOLE_PORT = 9001
SERVICE_NAME = "minio"
SECRET_NAME = "minio-credentials"
ROOT_USER = "trainstack-admin"


@dataclass
class MinIOArgs:
    namespace: pulumi.Input[str]
    storage_size: str
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
        secret_name = args.credentials_secret or self._secret(args, child).metadata.name
        pvc = self._pvc(args, child)
        deployment = self._deployment(args, secret_name, pvc, child)
        service = self._service(args, child)
        host = pulumi.Output.concat(SERVICE_NAME, ".", args.namespace, ".svc")
        self.endpoint = pulumi.Output.concat(host, f":{API_PORT}")
        self.store = pod.StoreRef(url=pulumi.Output.concat("s3://", self.endpoint),
                                  secret_name=secret_name, bucket_prefix=args.bucket_prefix)
        self.ready = [deployment, service]
        self.register_outputs({"endpoint": self.endpoint, "secret_name": secret_name})

    def _secret(self, args: MinIOArgs, opts: pulumi.ResourceOptions) -> k8s.core.v1.Secret:
        password = args.root_password
        if password is None:
            password = random.RandomPassword(
                "minio-root-password", length=32, special=False, opts=opts
            ).result
        return pod.credentials_secret(SECRET_NAME, args.namespace, ROOT_USER, password,
                                      "minio", opts)

    def _pvc(self, args: MinIOArgs, opts: pulumi.ResourceOptions):
        return k8s.core.v1.PersistentVolumeClaim(
            "minio-data",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name="minio-data",
                namespace=args.namespace,
                labels=pod.labels("minio"),
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

    def _deployment(self, args, secret_name, pvc, opts) -> k8s.apps.v1.Deployment:
        labels = pod.labels("minio")
        data = k8s.core.v1.VolumeArgs(
            name="data",
            persistent_volume_claim=k8s.core.v1.PersistentVolumeClaimVolumeSourceArgs(
                claim_name=pvc.metadata.name
            ),
        )
        return k8s.apps.v1.Deployment(
            "minio",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name="minio", namespace=args.namespace, labels=labels
            ),
            spec=k8s.apps.v1.DeploymentSpecArgs(
                replicas=1,
                # One RWO volume: the old pod must release it before the new one starts.
                strategy=k8s.apps.v1.DeploymentStrategyArgs(type="Recreate"),
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels=labels),
                template=k8s.core.v1.PodTemplateSpecArgs(
                    metadata=k8s.meta.v1.ObjectMetaArgs(labels=labels),
                    spec=k8s.core.v1.PodSpecArgs(
                        security_context=pod.pod_security(MINIO_UID),
                        containers=[_server_container(secret_name)],
                        volumes=[data],
                    ),
                ),
            ),
            opts=opts,
        )

    def _service(self, args: MinIOArgs, opts: pulumi.ResourceOptions) -> k8s.core.v1.Service:
        return k8s.core.v1.Service(
            "minio",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=SERVICE_NAME, namespace=args.namespace, labels=pod.labels("minio")
            ),
            spec=k8s.core.v1.ServiceSpecArgs(
                type="ClusterIP",
                selector=pod.labels("minio"),
                ports=[
                    k8s.core.v1.ServicePortArgs(name="api", port=API_PORT, target_port="api"),
                    k8s.core.v1.ServicePortArgs(
                        name="console", port=CONSOLE_PORT, target_port="console"
                    ),
                ],
            ),
            opts=opts,
        )


def _server_container(secret_name: pulumi.Input[str]) -> k8s.core.v1.ContainerArgs:
    def probe(path: str, delay: int) -> k8s.core.v1.ProbeArgs:
        return k8s.core.v1.ProbeArgs(
            http_get=k8s.core.v1.HTTPGetActionArgs(path=path, port=API_PORT),
            initial_delay_seconds=delay,
            period_seconds=10,
        )

    return k8s.core.v1.ContainerArgs(
        name="minio",
        image=MINIO_IMAGE,
        # --certs-dir: the default (~/.minio/certs) is not writable for a non-root uid.
        args=["server", "/data", "--console-address", f":{CONSOLE_PORT}",
              "--certs-dir", "/tmp/minio-certs"],
        env=[
            pod.secret_env("MINIO_ROOT_USER", secret_name, pod.ACCESS_KEY_ID),
            pod.secret_env("MINIO_ROOT_PASSWORD", secret_name, pod.SECRET_ACCESS_KEY),
        ],
        ports=[
            k8s.core.v1.ContainerPortArgs(name="api", container_port=API_PORT),
            k8s.core.v1.ContainerPortArgs(name="console", container_port=CONSOLE_PORT),
        ],
        readiness_probe=probe("/minio/health/ready", 5),
        liveness_probe=probe("/minio/health/live", 15),
        resources=k8s.core.v1.ResourceRequirementsArgs(
            requests={"cpu": "250m", "memory": "512Mi"}, limits={"cpu": "1", "memory": "1Gi"}
        ),
        security_context=pod.container_security(MINIO_UID),
        volume_mounts=[k8s.core.v1.VolumeMountArgs(name="data", mount_path="/data")],
    )
