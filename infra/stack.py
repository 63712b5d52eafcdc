"""Wires the components together from a validated StackConfig; returns the exports.

The store is the in-cluster MinIO (no `storeEndpoint`) or an external S3 API; either way
every workload gets one StoreRef: URL, region, bucket prefix and the credentials Secret.
"""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra import gitops, pod
from infra.buckets import Buckets, BucketsArgs, StoreCredentials, StoreCredentialsArgs
from infra.config import StackConfig, StackSecrets
from infra.image import ImageRef, TrainerImage, TrainerImageArgs, prebuilt
from infra.minio_server import MinIO, MinIOArgs
from infra.training import Training, TrainingArgs
from infra.training_operator import TrainingOperator, TrainingOperatorArgs
from infra.webapp import Inference, InferenceArgs


def build_stack(cfg: StackConfig, secrets: StackSecrets) -> dict[str, Any]:
    render = gitops.render_provider(cfg.render_yaml_to) if cfg.render_yaml_to else None
    ns = k8s.core.v1.Namespace(
        "namespace",
        metadata=k8s.meta.v1.ObjectMetaArgs(
            name=cfg.namespace, labels={"app.kubernetes.io/part-of": "trainstack"}
        ),
        opts=gitops.options("namespace", render),
    )
    namespace = ns.metadata.name
    image, built = _image(cfg)
    store, store_ready = _store(cfg, secrets, namespace, render)
    buckets = Buckets(
        "buckets",
        BucketsArgs(namespace=namespace, image=image.ref, image_pull_policy=image.pull_policy,
                    store=store, timeout=cfg.buckets_timeout, depends_on=store_ready),
        opts=gitops.options("buckets", render),
    )
    operator = None
    if cfg.install_training_operator:
        operator = TrainingOperator(
            "training-operator", TrainingOperatorArgs(version=cfg.training_operator_version)
        )
    training = _training(cfg, namespace, image, store, [buckets, *built], operator, render)
    inference = Inference(
        "inference",
        InferenceArgs(
            namespace=namespace,
            image=image.ref,
            image_pull_policy=image.pull_policy,
            store=store,
            model_name=cfg.model_name,
            replicas=cfg.inference_replicas,
            service_type=cfg.inference_service_type,
            depends_on=[buckets],
        ),
        opts=gitops.options("inference", render),
    )
    return _exports(cfg, training.job_name, store, inference)


def _image(cfg: StackConfig) -> tuple[ImageRef, list[pulumi.Resource]]:
    """What pods run, and the build to wait for (none for a prebuilt image)."""
    if not cfg.build_image:
        return prebuilt(cfg.image), []
    image = TrainerImage(
        "trainer-image",
        TrainerImageArgs(repository=cfg.image_repository, push=cfg.pushes,
                         gpus_per_worker=cfg.gpus_per_worker),
    )
    return ImageRef(image.ref, image.pull_policy), [image]


def _store(cfg: StackConfig, secrets: StackSecrets, namespace, render
           ) -> tuple[pod.StoreRef, list[pulumi.Resource]]:
    """The workloads' StoreRef and what must be ready before the bucket Job runs."""
    opts = gitops.options("store", render)
    if cfg.store_endpoint is None:
        minio = MinIO(
            "minio",
            MinIOArgs(namespace=namespace, storage_size=cfg.minio_volume_size,
                      storage_class=cfg.minio_storage_class,
                      root_password=secrets.minio_root_password,
                      credentials_secret=cfg.store_credentials_secret,
                      bucket_prefix=cfg.bucket_prefix),
            opts=opts,
        )
        return minio.store, minio.ready
    secret_name: pulumi.Input[str] | None = cfg.store_credentials_secret
    ready: list[pulumi.Resource] = []
    if secret_name is None:
        credentials = StoreCredentials(
            "store-credentials",
            StoreCredentialsArgs(namespace=namespace, access_key=cfg.store_access_key,
                                 secret_key=secrets.store_secret_key),
            opts=opts,
        )
        secret_name, ready = credentials.secret_name, [credentials]
    store = pod.StoreRef(url=store_url(cfg.store_endpoint), secret_name=secret_name,
                         region=cfg.store_region, bucket_prefix=cfg.bucket_prefix)
    return store, ready


def store_url(endpoint: str) -> str:
    """TRAINSTACK_STORE for `storeEndpoint`: https -> s3s://HOST[:PORT], http -> s3://HOST:PORT."""
    scheme, _, host = endpoint.partition("://")
    return f"{'s3s' if scheme == 'https' else 's3'}://{host}"


def _training(cfg: StackConfig, namespace, image: ImageRef, store: pod.StoreRef,
              depends_on: list[pulumi.Resource], operator: TrainingOperator | None,
              render) -> Training:
    return Training(
        "training",
        TrainingArgs(
            namespace=namespace,
            image=image.ref,
            image_pull_policy=image.pull_policy,
            store=store,
            train_config=cfg.train_json(),
            workers=cfg.workers,
            gpus_per_worker=cfg.gpus_per_worker,
            cpu=cfg.cpu_per_worker,
            memory=cfg.memory_per_worker,
            dataset=cfg.dataset,
            ingest_source=cfg.ingest_source,
            ingest_timeout=cfg.ingest_timeout,
            ingest_storage=cfg.ingest_storage,
            node_selector=cfg.node_selector,
            tolerations=cfg.tolerations,
            depends_on=depends_on,
            operator=operator,
        ),
        opts=gitops.options("training", render),
    )


def _exports(cfg: StackConfig, job: pulumi.Output[str], store: pod.StoreRef,
             inference: Inference) -> dict[str, Any]:
    ns = cfg.namespace
    selector = pulumi.Output.concat("training.kubeflow.org/job-name=", job)
    exports = {
        "namespace": ns,
        "store": store.url,
        "buckets": cfg.buckets,
        "inferenceUrl": inference.url,
        "inferenceAccess": inference.access,
        "pytorchJobName": job,
        "followLogs": pulumi.Output.concat(
            f"kubectl -n {ns} logs -f -l ", selector, " --prefix --max-log-requests 64"),
        "masterLogs": pulumi.Output.concat(f"kubectl -n {ns} logs -f ", job, "-master-0"),
        "jobStatus": pulumi.Output.concat(
            f"kubectl -n {ns} get pytorchjob ", job, f" -o wide && kubectl -n {ns} get pods -l ",
            selector),
    }
    if cfg.store_endpoint is None:
        exports["minioEndpoint"] = pulumi.Output.from_input(store.url).apply(
            lambda url: url.removeprefix("s3://"))
    if cfg.render_yaml_to:
        exports["renderedTo"] = cfg.render_yaml_to
    return exports
