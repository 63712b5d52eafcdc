"""Wires the components together from a validated StackConfig; returns the exports.

The store is the in-cluster MinIO (no `storeEndpoint`) or an external S3 API; either way
every workload gets one StoreRef: URL, region, bucket prefix and the credentials Secret.
The network fences (`networkPolicy`) are declared before any workload that connects.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pulumi
import pulumi_kubernetes as k8s

from infra import gitops, queueing
from infra.config.cluster import ClusterAccess
from infra.config.keys import StackConfig, StackSecrets
from infra.config.stack_config import (
    DEFAULT_ACCURACY_DROP,
    DEFAULT_COOLDOWN,
    DEFAULT_DRIFT_WINDOWS,
)
from infra.exports import stack_exports
from infra.monitoring.component import Monitoring, MonitoringArgs
from infra.operators.trainer_v2 import TRAINER_NAMESPACE, TrainerV2, TrainerV2Args
from infra.operators.training_operator import TrainingOperator, TrainingOperatorArgs
from infra.security.fences import FencesArgs, Flow, NetworkFences, OutsideFlow, service_namespace
from infra.workloads import pod, rotation
from infra.workloads.catalog import (
    APP,
    BUCKETS,
    INGEST,
    RETRAIN,
    STORE,
    TRACKING,
    TRAINER,
    Workload,
)
from infra.workloads.image import ImageRef, TrainerImage, TrainerImageArgs, prebuilt
from infra.workloads.jobparts import progress
from infra.workloads.retrain import RetrainArgs, Retraining, promotion_env
from infra.workloads.store.buckets import (
    STORE_SECRET,
    Buckets,
    BucketsArgs,
    StoreCredentials,
    StoreCredentialsArgs,
)
from infra.workloads.store.minio_server import MinIO, MinIOArgs
from infra.workloads.tracking.mlflow_server import DEFAULT_IMAGE as DEFAULT_MLFLOW_IMAGE
from infra.workloads.tracking.mlflow_server import MlflowArgs, MlflowServer
from infra.workloads.training import Training, TrainingArgs
from infra.workloads.webapp import Inference, InferenceArgs


def build_stack(cfg: StackConfig, secrets: StackSecrets,
                cluster: ClusterAccess | None = None) -> dict[str, Any]:
    """`cluster`: where `up` asks Kueue about the queued job (None, as under mocks: not)."""
    render = gitops.render_provider(cfg.render_yaml_to) if cfg.render_yaml_to else None
    ns = k8s.core.v1.Namespace(
        "namespace",
        metadata=k8s.meta.v1.ObjectMetaArgs(
            name=cfg.namespace,
            labels={"app.kubernetes.io/part-of": "trainstack", **pod.POD_SECURITY_LABELS},
        ),
        opts=gitops.options("namespace", render),
    )
    namespace = ns.metadata.name
    versions = rotation.SecretVersions()
    fences = _fences(cfg, namespace, render)
    image, built = _image(cfg)
    store, store_ready = _store(cfg, secrets, namespace, render, versions)
    # Every client of the store starts after the bucket Job, which starts after the
    # fences: no connection is cut by a default-deny that lands before its allow rule.
    buckets = Buckets(
        "buckets",
        BucketsArgs(namespace=namespace, image=image.ref, image_pull_policy=image.pull_policy,
                    store=store, timeout=cfg.buckets_timeout,
                    depends_on=[*store_ready, *([fences] if fences else [])],
                    tracking=cfg.mlflow),
        opts=gitops.options("buckets", render),
    )
    tracking = _tracking(cfg, namespace, store, buckets, render, versions)
    tracking_uri = tracking.url if tracking else None
    operator = _operator(cfg)
    training_args = _training_args(cfg, namespace, image, store, [buckets, *built], operator,
                                   tracking, queueing.declare(cfg, namespace, render))
    training = Training("training", training_args, opts=gitops.options("training", render))
    queueing.announce(cfg, training.job, training.job_name, cluster)
    if cfg.retrains:
        _retraining(cfg, namespace, training_args, training, render)
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
            auth_token=secrets.inference_auth_token,
            auth_secret=cfg.inference_auth_secret,
            tracking_uri=tracking_uri,
            mlflow_ui_url=tracking.ui_url if tracking else None,
            versions=versions,
        ),
        opts=gitops.options("inference", render),
    )
    if cfg.monitors:
        _monitoring(cfg, inference, render)
    return stack_exports(cfg, training.job_name, store, inference, tracking)


def workloads(cfg: StackConfig) -> list[Workload]:
    """What the stack deploys: the store only in-cluster, the ingest Job only to download,
    the MLflow server only with `mlflow`."""
    deployed = [BUCKETS, TRAINER, APP]
    if cfg.store_endpoint is None:
        deployed.insert(0, STORE)
    if cfg.ingests:
        deployed.insert(-2, INGEST)
    if cfg.mlflow:
        deployed.append(TRACKING)
    if cfg.retrains:
        deployed.append(RETRAIN)
    return deployed


def flows(cfg: StackConfig) -> tuple[list[Flow], list[OutsideFlow]]:
    """Every connection the workloads make: inside the namespace, and out of the cluster."""
    clients = tuple(w for w in workloads(cfg) if w is not STORE)  # all use the store
    users = ({"namespaces": (cfg.inference_ingress_namespace,)}
             if cfg.inference_ingress_namespace else {"outside_of": cfg.namespace})
    inside = [
        # The Master's rendezvous port, and the ports Gloo/NCCL listen on between ranks:
        # the kernel picks those, so any TCP port, from training pods only.
        Flow(TRAINER, sources=(TRAINER,)),
        Flow(APP, ports=("http",), **users),
    ]
    if cfg.monitors:  # Prometheus scrapes /metrics
        inside.append(Flow(APP, ports=("http",), namespaces=(cfg.scrape_namespace,)))
    if cfg.mlflow:
        # Rank 0 logs its run; the app links versions to runs. Users open the UI through
        # `kubectl port-forward` (no rule needed), or, behind MLflow's login, as the app.
        inside.append(Flow(TRACKING, ports=("http",), sources=(TRAINER, APP)))
        if cfg.mlflow_login:
            inside.append(Flow(TRACKING, ports=("http",), **users))
    outside = [OutsideFlow((TRAINER,), 10443, "Trainer's status server (progress)",
                           TRAINER_NAMESPACE)] if cfg.training_api == "trainjob" else []
    if cfg.store_endpoint is None:
        inside.append(Flow(STORE, ports=("api",), sources=clients))
    else:
        url = urlsplit(cfg.store_endpoint)
        outside.append(OutsideFlow(clients, url.port or 443, f"the object store {url.hostname}",
                                   namespace=service_namespace(url.hostname)))
    # A retrain ingests again, from where the ingest Job did.
    downloaders = (INGEST, RETRAIN) if cfg.retrains else (INGEST,)
    if cfg.ingest_source is not None:
        url = urlsplit(cfg.ingest_source)
        port = url.port or (443 if url.scheme == "https" else 80)
        outside.append(OutsideFlow(downloaders, port, f"the dataset download {url.hostname}"))
    elif cfg.dataset_source_secret is not None:
        # The URL is in the user's Secret: the stack knows neither host nor port.
        outside += [OutsideFlow(downloaders, port, "the dataset download (datasetSourceSecret)")
                    for port in (443, 80)]
    if cfg.retrains:
        # The API server, where its Service sends the retrain pod: 443 or, behind the
        # kubernetes Service's translation, the server's own port (6443 on most clusters).
        outside += [OutsideFlow((RETRAIN,), port, "the Kubernetes API server")
                    for port in (443, 6443)]
    return inside, outside


def _fences(cfg: StackConfig, namespace, render) -> NetworkFences | None:
    if cfg.network_policy == "none":
        return None
    inside, outside = flows(cfg)
    return NetworkFences(
        "fences",
        FencesArgs(namespace=namespace, mode=cfg.network_policy, workloads=workloads(cfg),
                   flows=inside, outside=outside),
        opts=gitops.options("fences", render),
    )


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


def _store(cfg: StackConfig, secrets: StackSecrets, namespace, render,
           versions: rotation.SecretVersions) -> tuple[pod.StoreRef, list[pulumi.Resource]]:
    """The workloads' StoreRef and what must be ready before the bucket Job runs."""
    opts = gitops.options("store", render)
    if cfg.store_endpoint is None:
        minio = MinIO(
            "minio",
            MinIOArgs(namespace=namespace, storage_size=cfg.minio_volume_size,
                      storage_class=cfg.minio_storage_class,
                      root_password=secrets.minio_root_password,
                      credentials_secret=cfg.store_credentials_secret,
                      bucket_prefix=cfg.bucket_prefix, versions=versions),
            opts=opts,
        )
        return minio.store, minio.ready
    secret_name: pulumi.Input[str] | None = cfg.store_credentials_secret
    ready: list[pulumi.Resource] = []
    version, job_secret = None, None
    if secret_name is None:
        credentials = StoreCredentials(
            "store-credentials",
            StoreCredentialsArgs(namespace=namespace, access_key=cfg.store_access_key,
                                 secret_key=secrets.store_secret_key, versions=versions),
            opts=opts,
        )
        secret_name, ready = credentials.secret_name, [credentials]
        version, job_secret = credentials.version, STORE_SECRET
    store = pod.StoreRef(url=store_url(cfg.store_endpoint), secret_name=secret_name,
                         region=cfg.store_region, bucket_prefix=cfg.bucket_prefix,
                         version=version, job_secret_name=job_secret)
    return store, ready


def store_url(endpoint: str) -> str:
    """TRAINSTACK_STORE for `storeEndpoint`: https -> s3s://HOST[:PORT], http -> s3://HOST:PORT."""
    scheme, _, host = endpoint.partition("://")
    return f"{'s3s' if scheme == 'https' else 's3'}://{host}"


def _tracking(cfg: StackConfig, namespace, store: pod.StoreRef, buckets: Buckets,
              render, versions: rotation.SecretVersions) -> MlflowServer | None:
    """The MLflow server (`mlflow`), after the bucket Job made its artifact bucket."""
    if not cfg.mlflow:
        return None
    return MlflowServer(
        "mlflow",
        MlflowArgs(namespace=namespace, store=store, bucket=cfg.tracking_bucket,
                   image=cfg.mlflow_image or DEFAULT_MLFLOW_IMAGE,
                   storage_class=cfg.mlflow_storage_class, depends_on=[buckets],
                   login=cfg.mlflow_login, versions=versions),
        opts=gitops.options("mlflow", render),
    )


def _operator(cfg: StackConfig) -> pulumi.Resource | None:
    """The controller of `trainingApi`'s jobs, when the stack installs it."""
    if not cfg.install_training_operator:
        return None
    if cfg.training_api == "trainjob":
        return TrainerV2("kubeflow-trainer", TrainerV2Args())
    return TrainingOperator(
        "training-operator", TrainingOperatorArgs(version=cfg.training_operator_version))


def _training_args(cfg: StackConfig, namespace, image: ImageRef, store: pod.StoreRef,
                   depends_on: list[pulumi.Resource], operator: pulumi.Resource | None,
                   tracking: MlflowServer | None, queue: pulumi.Resource | None
                   ) -> TrainingArgs:
    return TrainingArgs(
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
        ingest_source_secret=cfg.dataset_source_secret,
        ingest_timeout=cfg.ingest_timeout,
        ingest_storage=cfg.ingest_storage,
        data_cache_size=cfg.data_cache_size,
        node_selector=cfg.node_selector,
        tolerations=cfg.tolerations,
        depends_on=depends_on,
        operator=operator,
        tracking=tracking,
        api=cfg.training_api,
        env=promotion_env(cfg.promotion_gate, cfg.promotion_tolerance),
        queue=cfg.queue,
        queue_objects=queue,
        job_progress=progress.annotated(cfg.training_api, cfg.network_policy),
    )


def _retraining(cfg: StackConfig, namespace, args: TrainingArgs, training: Training,
                render) -> Retraining:
    """`retrainSchedule`, `retrainOnDrift`: the CronJobs that create the training job."""
    return Retraining(
        "retrain",
        RetrainArgs(namespace=namespace, training=args, model_name=cfg.model_name,
                    schedule=cfg.retrain_schedule, on_drift=cfg.retrain_on_drift,
                    drift_windows=cfg.drift_alert_windows or DEFAULT_DRIFT_WINDOWS,
                    cooldown=cfg.retrain_cooldown or DEFAULT_COOLDOWN, depends_on=[training]),
        opts=gitops.options("retrain", render),
    )


def _monitoring(cfg: StackConfig, inference: Inference, render) -> Monitoring:
    """`monitoring: prometheus-operator`: what Prometheus scrapes and alerts on, Grafana's
    dashboard; the thresholds' defaults are infra.config.stack_config's."""
    return Monitoring(
        "monitoring",
        MonitoringArgs(namespace=cfg.namespace, labels=cfg.monitoring_labels,
                       drift_windows=cfg.drift_alert_windows or DEFAULT_DRIFT_WINDOWS,
                       accuracy_drop=(cfg.accuracy_drop_alert if cfg.accuracy_drop_alert
                                      is not None else DEFAULT_ACCURACY_DROP) / 100,
                       auth_secret=inference.token_secret, depends_on=[inference]),
        opts=gitops.options("monitoring", render),
    )
