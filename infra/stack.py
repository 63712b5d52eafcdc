"""Wires the components together from a validated StackConfig; returns the exports."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.config import StackConfig
from infra.image import TrainerImage, TrainerImageArgs
from infra.minio_server import MinIO, MinIOArgs
from infra.training import Training, TrainingArgs
from infra.training_operator import TrainingOperator, TrainingOperatorArgs
from infra.webapp import Inference, InferenceArgs


def build_stack(cfg: StackConfig, minio_password: pulumi.Input[str] | None) -> dict[str, Any]:
    ns = k8s.core.v1.Namespace(
        "namespace",
        metadata=k8s.meta.v1.ObjectMetaArgs(
            name=cfg.namespace, labels={"app.kubernetes.io/part-of": "trainstack"}
        ),
    )
    namespace = ns.metadata.name
    image = TrainerImage(
        "trainer-image",
        TrainerImageArgs(repository=cfg.image, push=cfg.push_image,
                         gpus_per_worker=cfg.gpus_per_worker),
    )
    minio = MinIO(
        "minio",
        MinIOArgs(
            namespace=namespace,
            storage_size=cfg.minio_storage_size,
            storage_class=cfg.minio_storage_class,
            image=image.ref,
            image_pull_policy=image.pull_policy,
            root_password=minio_password,
        ),
    )
    operator = None
    if cfg.install_training_operator:
        operator = TrainingOperator(
            "training-operator", TrainingOperatorArgs(version=cfg.training_operator_version)
        )
    training = _training(cfg, namespace, image, minio, operator)
    inference = Inference(
        "inference",
        InferenceArgs(
            namespace=namespace,
            image=image.ref,
            image_pull_policy=image.pull_policy,
            store=minio.store,
            model_name=cfg.model_name,
            replicas=cfg.inference_replicas,
            service_type=cfg.inference_service_type,
            depends_on=[minio],
        ),
    )
    return _exports(cfg, training.job_name, minio.endpoint, inference)


def _training(cfg: StackConfig, namespace, image: TrainerImage, minio: MinIO,
              operator: TrainingOperator | None) -> Training:
    return Training(
        "training",
        TrainingArgs(
            namespace=namespace,
            image=image.ref,
            image_pull_policy=image.pull_policy,
            store=minio.store,
            train_config=cfg.train_json(),
            workers=cfg.workers,
            gpus_per_worker=cfg.gpus_per_worker,
            cpu=cfg.cpu_per_worker,
            memory=cfg.memory_per_worker,
            dataset=cfg.dataset,
            ingest_source=cfg.ingest_source,
            node_selector=cfg.node_selector,
            tolerations=cfg.tolerations,
            depends_on=[minio.bucket_job, image],
            operator=operator,
        ),
    )


def _exports(cfg: StackConfig, job: str, minio_endpoint, inference: Inference) -> dict[str, Any]:
    ns = cfg.namespace
    selector = f"training.kubeflow.org/job-name={job}"
    return {
        "namespace": ns,
        "minioEndpoint": minio_endpoint,
        "inferenceUrl": inference.url,
        "inferenceAccess": inference.access,
        "pytorchJobName": job,
        "followLogs": f"kubectl -n {ns} logs -f -l {selector} --prefix --max-log-requests 64",
        "masterLogs": f"kubectl -n {ns} logs -f {job}-master-0",
        "jobStatus": f"kubectl -n {ns} get pytorchjob {job} -o wide && "
                     f"kubectl -n {ns} get pods -l {selector}",
    }
