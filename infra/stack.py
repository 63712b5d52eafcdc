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
from infra.config.stack_config import DEFAULT_ACCURACY_DROP, DEFAULT_DRIFT_WINDOWS
from infra.monitoring.component import Monitoring, MonitoringArgs
from infra.operators.trainer_v2 import TRAINER_NAMESPACE, TrainerV2, TrainerV2Args
from infra.operators.training_operator import TrainingOperator, TrainingOperatorArgs
from infra.security.fences import FencesArgs, Flow, NetworkFences, OutsideFlow, service_namespace
from infra.workloads import pod, rotation
from infra.workloads.buckets import (
    STORE_SECRET,
    Buckets,
    BucketsArgs,
    StoreCredentials,
    StoreCredentialsArgs,
)
from infra.workloads.catalog import APP, BUCKETS, INGEST, STORE, TRACKING, TRAINER, Workload
from infra.workloads.image import ImageRef, TrainerImage, TrainerImageArgs, prebuilt
from infra.workloads.jobparts import progress
from infra.workloads.minio_server import MinIO, MinIOArgs
from infra.workloads.mlflow_server import DEFAULT_IMAGE as DEFAULT_MLFLOW_IMAGE
from infra.workloads.mlflow_server import MlflowArgs, MlflowServer
from infra.workloads.training import Training, TrainingArgs
from infra.workloads.trainjob import COMPLETION_INDEX_LABEL, JOBSET_NAME_LABEL
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
    training = _training(cfg, namespace, image, store, [buckets, *built], operator, render,
                         tracking, queueing.declare(cfg, namespace, render))
    queueing.announce(cfg, training.job, training.job_name, cluster)
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
    return _exports(cfg, training.job_name, store, inference, tracking)


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
    if cfg.ingest_source is not None:
        url = urlsplit(cfg.ingest_source)
        port = url.port or (443 if url.scheme == "https" else 80)
        outside.append(OutsideFlow((INGEST,), port, f"the dataset download {url.hostname}"))
    elif cfg.dataset_source_secret is not None:
        # The URL is in the user's Secret: the stack knows neither host nor port.
        outside += [OutsideFlow((INGEST,), port, "the dataset download (datasetSourceSecret)")
                    for port in (443, 80)]
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


def _training(cfg: StackConfig, namespace, image: ImageRef, store: pod.StoreRef,
              depends_on: list[pulumi.Resource], operator: pulumi.Resource | None,
              render, tracking: MlflowServer | None, queue: pulumi.Resource | None) -> Training:
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
            queue=cfg.queue,
            queue_objects=queue,
            job_progress=progress.annotated(cfg.training_api, cfg.network_policy),
        ),
        opts=gitops.options("training", render),
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


def _exports(cfg: StackConfig, job: pulumi.Output[str], store: pod.StoreRef,
             inference: Inference, tracking: MlflowServer | None) -> dict[str, Any]:
    ns = cfg.namespace
    exports = {
        "namespace": ns,
        "store": store.url,
        "buckets": cfg.buckets,
        "inferenceUrl": inference.url,
        "inferenceAccess": inference.access,
        # One drift check of the served version from the app's pod (its store, its token).
        "driftCheck": (f"kubectl -n {ns} exec deploy/{APP.name} -- python -m inference "
                       f"monitor --model {cfg.model_name}"),
        **_job_exports(cfg, job),
    }
    if cfg.store_endpoint is None:
        exports["minioEndpoint"] = pulumi.Output.from_input(store.url).apply(
            lambda url: url.removeprefix("s3://"))
    if tracking is not None:
        exports["mlflowUrl"] = tracking.url
        exports["mlflowAccess"] = tracking.access
    if cfg.render_yaml_to:
        exports["renderedTo"] = cfg.render_yaml_to
    return exports


def _job_exports(cfg: StackConfig, job: pulumi.Output[str]) -> dict[str, Any]:
    """The job's name and the kubectl commands that follow it, for `trainingApi`'s kind."""
    ns = cfg.namespace
    if cfg.training_api == "trainjob":
        name_key, kind = "trainJobName", "trainjob"
        selector = pulumi.Output.concat(f"{JOBSET_NAME_LABEL}=", job)
        # Rank 0: completion index 0 of the replicated job `node`.
        rank0 = pulumi.Output.concat("-l ", selector, f",{COMPLETION_INDEX_LABEL}=0")
    else:
        name_key, kind = "pytorchJobName", "pytorchjob"
        selector = pulumi.Output.concat("training.kubeflow.org/job-name=", job)
        rank0 = pulumi.Output.concat(job, "-master-0")
    return {
        name_key: job,
        "followLogs": pulumi.Output.concat(
            f"kubectl -n {ns} logs -f -l ", selector, " --prefix --max-log-requests 64"),
        "masterLogs": pulumi.Output.concat(f"kubectl -n {ns} logs -f ", rank0),
        "jobStatus": pulumi.Output.concat(
            f"kubectl -n {ns} get {kind} ", job, f" -o wide && kubectl -n {ns} get pods -l ",
            selector),
        "progress": progress.read_command(ns, cfg.training_api, job),
        **queueing.exports(cfg),
    }
