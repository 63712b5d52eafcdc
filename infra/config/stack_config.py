"""What a valid stack config is: the StackConfig dataclass, one documented field per key.

Each field names its `trainstack:` key, its parser (infra/config/values.py: what is allowed,
in the words of its error) and what it does; infra/config/keys.py reads the keys from the
engine through these fields, and infra/config/reference.py writes the configuration
reference from them. The rules between keys are the KeyRules mixin
(infra/config/combinations.py), checked on construction.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field
from typing import Any

from infra.config import schedule, structured
from infra.config import values as v
from infra.config.combinations import KeyRules

# The trainer's own contracts (stdlib-only modules: no torch in the Pulumi program), so a
# model or dataset added there cannot be forgotten here.
from trainer.contract.config import BENCHMARK_DATASETS, CIFAR10_URL, MODELS
from trainer.contract.config import DATASETS as TRAINER_DATASETS
from trainer.contract.layout import ALL_BUCKETS, BUCKETS, TRACKING_BUCKET, bucket_names, model_name
from trainer.contract.lifecycle.promotion import DEFAULT_TOLERANCE

DEFAULT_REPOSITORY = "trainstack-trainer"
DATASETS = tuple(d for d in TRAINER_DATASETS if d not in BENCHMARK_DATASETS)
# The PyTorchJob of the Training Operator v1, or the TrainJob of Kubeflow Trainer v2.
TRAINING_APIS = ("pytorchjob", "trainjob")
# NetworkPolicies (infra/security/fences.py): ingress fences only, both ways, or none.
NETWORK_POLICY_MODES = ("ingress", "ingress-egress", "none")
# How users reach MLflow (infra/workloads/tracking/mlflow_auth.py).
MLFLOW_ACCESS_MODES = ("port-forward", "login")
SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer")
MONITORING_MODES = ("none", "prometheus-operator")
DEFAULT_MONITORING_NAMESPACE = "monitoring"
DEFAULT_DRIFT_WINDOWS = 3
DEFAULT_ACCURACY_DROP = 10.0  # percentage points
DEFAULT_MINIO_SIZE = "10Gi"
DEFAULT_COOLDOWN = "24h"
# A training process imports torch and holds a batch and the model: below this the kernel
# OOM-kills it before its first step, so a smaller value is a typo ("1" is one byte).
MIN_WORKER_MEMORY = "512Mi"
_CPU = "a CPU quantity > 0 such as 1, 0.5 or 500m"
_MEMORY = "a memory quantity > 0 such as 2Gi, 512Mi or 1G"
_SECRET_NAME = v.pattern(v.DNS_SUBDOMAIN, "a Secret name (DNS-1123)")
_STORAGE_CLASS = v.pattern(v.DNS_SUBDOMAIN, "a StorageClass name: a DNS-1123 subdomain (a-z, "
                                            "0-9, '-', '.'), such as gp3 or ceph.rbd.fast")


def setting(key: str, group: str, parser: v.Parser, doc: str, default: Any = MISSING, *,
            factory: Any = MISSING, shown_default: str | None = None) -> Any:
    """A field that is the `trainstack:` `key`: its parser, its group and what it does in
    the configuration reference. `shown_default` is the default as the reference shows it
    (where None stands for a computed one)."""
    return field(default=default, default_factory=factory, metadata={
        "key": key, "group": group, "parser": parser, "doc": doc,
        "shown_default": shown_default})


@dataclass(frozen=True)
class StackConfig(KeyRules):
    """The validated stack settings. None means "not set": several keys only apply in one
    mode (MinIO's, the image's), and setting one where it does not apply is an error rather
    than silently ignored."""

    workers: int = setting("workers", "Training", v.int_at_least(1), "Training pods: 1 is the "
                           "Master only, N the Master and N-1 Workers. Changing it rescales the "
                           "run, which resumes from its last checkpoint.", 2)
    gpus_per_worker: int = setting("gpusPerWorker", "Training", v.int_at_least(0), "GPUs per "
                                   "training pod; > 0 builds the CUDA image, > 1 runs torchrun "
                                   "in each pod.", 0)
    cpu_per_worker: str = setting("cpuPerWorker", "Training", v.nonzero_quantity(v.CPU, _CPU),
                                  "CPU per training pod (request = limit).", "1")
    memory_per_worker: str = setting(
        "memoryPerWorker", "Training", v.memory_at_least(MIN_WORKER_MEMORY, _MEMORY),
        "Memory per training pod (request = limit; also the /dev/shm size). resnet18 on "
        "CIFAR-10 in fp32 peaks at about 2 GiB per rank.", "3Gi")
    epochs: int = setting("epochs", "Training", v.int_at_least(1), "Epochs of the run.", 10)
    batch_size: int = setting("batchSize", "Training", v.int_at_least(1), "Images per step "
                              "and per worker.", 128)
    learning_rate: float = setting("learningRate", "Training", v.positive_float, "Peak "
                                   "learning rate of SGD with Nesterov momentum (the model's "
                                   "schedule: one-cycle; fastcifar a linear decay).", 0.1)
    model: str = setting("model", "Training", v.choice(MODELS), "resnet18 (CIFAR stem), "
                         "resnet18-imagenet (stock stem), smallcnn, or fastcifar (the best "
                         "accuracy per minute on CPU).", "resnet18")
    checkpoint_every_steps: int = setting(
        "checkpointEverySteps", "Training", v.int_at_least(0), "Steps between mid-epoch "
        "checkpoints (0: at the end of each epoch only); a restarted run loses at most the "
        "steps since the last one.", 500)
    dataset: str = setting("dataset", "Data", v.choice(DATASETS, (
        f"{', '.join(DATASETS)} ({', '.join(BENCHMARK_DATASETS)} is for benchmarks only: "
        "python -m trainer train --dataset synthetic, or bench/)")),
        "What the ingest Job stores and training reads.", "cifar10")
    dataset_source: str | None = setting(
        "datasetSource", "Data", v.dataset_url, "Where the ingest Job downloads the dataset "
        "from (cifar10 defaults to the official archive; imagefolder needs one).", None,
        shown_default="the official CIFAR-10 URL")
    dataset_source_secret: str | None = setting(
        "datasetSourceSecret", "Data", _SECRET_NAME, "Or an existing Secret whose key "
        "TRAINSTACK_DATASET_SOURCE holds a URL with credentials (a presigned URL).", None)
    data_cache_size: str = setting(
        "dataCacheSize", "Data", v.nonzero_quantity(
            v.BYTES, "a size such as 4Gi, at least a few of the dataset's shards (128 MiB each)"),
        "Each training pod's read-ahead of dataset shards on local disk (an emptyDir).", "4Gi")
    ingest_storage: str = setting("ingestStorage", "Data", v.nonzero_quantity(
        v.BYTES, "a size such as 4Gi"), "The ingest Job's disk: the download and its unpacked "
        "files.", "4Gi")
    namespace: str = setting("namespace", "Cluster", v.namespace, "The namespace the stack "
                             "creates and owns.", "trainstack")
    training_api: str = setting("trainingApi", "Cluster", v.choice(
        TRAINING_APIS, "pytorchjob (Kubeflow Training Operator v1) or trainjob (Kubeflow "
                       "Trainer v2)"), "Which Kubeflow API runs the training job.", "pytorchjob")
    install_training_operator: bool = setting(
        "installTrainingOperator", "Cluster", v.boolean, "Install the operator of trainingApi; "
        "false on clusters that already run it.", True)
    training_operator_version: str = setting(
        "trainingOperatorVersion", "Cluster", v.operator_version, "The Training Operator's "
        "release (pytorchjob only; Kubeflow Trainer v2 is pinned).", "v1.8.1")
    node_selector: dict[str, str] = setting("nodeSelector", "Cluster", structured.node_selector,
                                            "Node labels the training pods need.", factory=dict,
                                            shown_default="none")
    tolerations: list[dict[str, Any]] = setting(
        "tolerations", "Cluster", structured.tolerations, "Taints the training pods tolerate (the GPU "
        "taint is tolerated without it).", factory=list, shown_default="none")
    queue: str | None = setting(
        "queue", "Cluster", v.pattern(v.DNS_LABEL, "a LocalQueue name (DNS-1123 label), such "
                                      "as team-a"),
        "Kueue's LocalQueue in the namespace for the training job: it is created suspended and "
        "starts, all its pods at once, when Kueue admits it within the queue's quota (a "
        "preempted job stops at a checkpoint and waits its turn again). Unset: it starts at "
        "once.", None)
    queue_quota: dict[str, Any] | None = setting(
        "queueQuota", "Cluster", structured.queue_quota, "With queue: the stack declares the "
        "LocalQueue, a ClusterQueue with this quota (for this namespace only) and its "
        "ResourceFlavor, for a team without a platform team's queue. Unset: queue must "
        "exist.", None, shown_default="none")
    buckets_timeout: str = setting("bucketsTimeout", "Cluster", v.duration, "How long `pulumi "
                                   "up` waits for the bucket Job.", "15m")
    ingest_timeout: str = setting("ingestTimeout", "Cluster", v.duration, "How long `pulumi "
                                  "up` waits for the ingest Job (download and image pull).", "30m")
    build_image: bool = setting("buildImage", "Image", v.boolean, "Build the trainer image "
                                "(Docker); false runs `image` as given.", True)
    image: str | None = setting(
        "image", "Image", v.image_reference, "Built: the repository (a registry path when "
        "pushImage is true); prebuilt: the full reference, by digest preferred.", None,
        shown_default=DEFAULT_REPOSITORY)
    push_image: bool | None = setting("pushImage", "Image", v.boolean, "Push the built image "
                                      "(false keeps it in the local Docker daemon: minikube).",
                                      None, shown_default="true")
    store_endpoint: str | None = setting(
        "storeEndpoint", "Object store", v.store_endpoint, "An existing S3-compatible store; "
        "unset, the stack runs MinIO in the namespace.", None, shown_default="in-cluster MinIO")
    store_region: str | None = setting("storeRegion", "Object store", v.pattern(
        v.REGION, "a region name such as eu-west-1"), "The store's region.", None)
    store_credentials_secret: str | None = setting(
        "storeCredentialsSecret", "Object store", _SECRET_NAME, "An existing Secret with keys "
        "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY that the workloads read.", None)
    store_access_key: str | None = setting(
        "storeAccessKey", "Object store", v.pattern(
            v.ACCESS_KEY, "an access key id (1-128 characters, no spaces)"),
        "Or the access key of a Secret the stack makes (with the secret storeSecretKey).", None)
    bucket_prefix: str = setting("bucketPrefix", "Object store", v.bucket_prefix, "Buckets "
                                 "become <prefix>datasets, <prefix>models, <prefix>metrics "
                                 "(and <prefix>mlflow).", "")
    minio_storage_size: str | None = setting(
        "minioStorageSize", "Object store", v.nonzero_quantity(v.BYTES, "a size such as 10Gi"),
        "MinIO's volume.", None, shown_default=DEFAULT_MINIO_SIZE)
    minio_storage_class: str | None = setting(
        "minioStorageClass", "Object store", _STORAGE_CLASS, "StorageClass of MinIO's volume.",
        None, shown_default="the cluster's default")
    inference_replicas: int = setting("inferenceReplicas", "Web app", v.int_at_least(1),
                                      "Replicas of the app (> 1 adds session affinity).", 1)
    inference_service_type: str = setting("inferenceServiceType", "Web app",
                                          v.choice(SERVICE_TYPES), "The app's Service type.",
                                          "NodePort")
    inference_ingress_namespace: str | None = setting(
        "inferenceIngressNamespace", "Web app", v.pattern(
            v.DNS_LABEL, "a namespace name (DNS-1123 label)"), "Only this namespace's pods "
        "(your Ingress controller) reach the app and MLflow's UI; needs ClusterIP.", None)
    inference_auth_secret: str | None = setting(
        "inferenceAuthSecret", "Web app", _SECRET_NAME, "Or an existing Secret whose key "
        "TRAINSTACK_AUTH_TOKEN holds the app's access token.", None)
    network_policy: str = setting("networkPolicy", "Web app", v.choice(
        NETWORK_POLICY_MODES, "ingress (default-deny ingress, then the workloads' flows), "
                              "ingress-egress (egress fenced too), none (no NetworkPolicy)"),
        "The namespace's network fences.", "ingress")
    mlflow: bool = setting("mlflow", "MLflow", v.boolean, "An MLflow tracking server in the "
                           "namespace; workloads get MLFLOW_TRACKING_URI.", True)
    mlflow_access: str | None = setting("mlflowAccess", "MLflow", v.choice(
        MLFLOW_ACCESS_MODES, "port-forward (only the stack's pods reach the server; users "
                             "through kubectl port-forward), login (the app's users reach it "
                             "and MLflow asks for the stack's generated login)"),
        "Who reaches MLflow.", None, shown_default="port-forward")
    mlflow_image: str | None = setting("mlflowImage", "MLflow", v.mlflow_image, "The MLflow "
                                       "server's image (pin it by digest, or your mirror).",
                                       None, shown_default="ghcr.io/mlflow/mlflow:v3.17.2-full")
    mlflow_storage_class: str | None = setting(
        "mlflowStorageClass", "MLflow", _STORAGE_CLASS, "StorageClass of MLflow's volume (its "
        "SQLite database).", None, shown_default="the cluster's default")
    monitoring: str = setting("monitoring", "Monitoring", v.choice(MONITORING_MODES, (
        "none, or prometheus-operator (a ServiceMonitor, a PrometheusRule and a Grafana "
        "dashboard ConfigMap: the cluster needs the Prometheus Operator's CRDs)")),
        "What watches the app's /metrics: drift, estimated accuracy, errors and latency, "
        "with alerts and a dashboard. The app checks drift either way (its Monitoring tab).",
        "none")
    monitoring_namespace: str | None = setting(
        "monitoringNamespace", "Monitoring", v.pattern(v.DNS_LABEL, "a namespace name "
                                                       "(DNS-1123 label)"),
        "The namespace Prometheus scrapes from: the fences let it reach the app.", None,
        shown_default=DEFAULT_MONITORING_NAMESPACE)
    monitoring_labels: dict[str, str] = setting(
        "monitoringLabels", "Monitoring", structured.label_map('{"release": "kube-prometheus"}'),
        "Labels on the ServiceMonitor and PrometheusRule, for your Prometheus's selectors "
        "(kube-prometheus-stack selects release=<its release name>).", factory=dict,
        shown_default="none")
    drift_alert_windows: int | None = setting(
        "driftAlertWindows", "Monitoring", v.int_at_least(1), "Drift checks in a row (each of "
        "256 predictions or a minute) before the drift alert fires.", None,
        shown_default=str(DEFAULT_DRIFT_WINDOWS))
    accuracy_drop_alert: float | None = setting(
        "accuracyDropAlert", "Monitoring", v.percentage_points, "How far the estimated "
        "accuracy may fall below the test accuracy before its alert fires.", None,
        shown_default=f"{DEFAULT_ACCURACY_DROP:g}")
    promotion_gate: bool = setting(
        "promotionGate", "Retraining", v.boolean, "Serve a new version only when, on the same "
        "test split, it is not worse than the served one by more than promotionTolerance "
        "(else it waits as a candidate: python -m trainer promote serves it); false serves "
        "what was published last.", True)
    promotion_tolerance: float | None = setting(
        "promotionTolerance", "Retraining", v.percentage_points, "How far below the served "
        "version's test accuracy a new version may be and still be served.", None,
        shown_default=f"{DEFAULT_TOLERANCE:g}")
    retrain_schedule: str | None = setting(
        "retrainSchedule", "Retraining", schedule.cron_schedule, "When the retrain CronJob "
        "ingests datasetSource again and trains a new run (UTC); unset: only by hand "
        "(kubectl create job --from=cronjob/trainstack-retrain) with retrainOnDrift.", None,
        shown_default="off")
    retrain_on_drift: bool = setting(
        "retrainOnDrift", "Retraining", v.boolean, "Retrain when driftAlertWindows drift "
        "checks in a row of the served version found drift (needs monitoring).", False)
    retrain_cooldown: str | None = setting(
        "retrainCooldown", "Retraining", schedule.cooldown, "The least time between two "
        "retrains on drift.", None, shown_default=DEFAULT_COOLDOWN)
    render_yaml_to: str | None = setting("renderYamlTo", "GitOps", v.directory, "A directory: "
                                         "write every object as YAML instead of applying.", None)
    secrets: frozenset[str] = frozenset()  # which SECRET_KEYS were given (never their values)
    # The keys the user set (parse_config); None: unknown, every value counts as set. Only
    # for messages: a default the user never typed is shown as one.
    given: frozenset[str] | None = field(default=None, compare=False)

    def __post_init__(self):
        self.check_combinations()

    @property
    def model_name(self) -> str:
        """`<model>-<dataset>`: the store prefix the trainer publishes and the app serves."""
        return model_name(self.model, self.dataset)

    @property
    def ingest_source(self) -> str | None:
        """What the ingest Job downloads: cifar10 defaults to the official archive. None
        with datasetSourceSecret too: then the Job reads the URL from that Secret."""
        if self.dataset_source_secret:
            return None
        if self.dataset_source:
            return self.dataset_source
        return CIFAR10_URL if self.dataset == "cifar10" else None

    @property
    def ingests(self) -> bool:
        """Whether the ingest Job runs (digits needs none: it ships with the trainer)."""
        return self.ingest_source is not None or self.dataset_source_secret is not None

    @property
    def mlflow_login(self) -> bool:
        """MLflow open to users, behind its login (`mlflowAccess login`)."""
        return self.mlflow and self.mlflow_access == "login"

    @property
    def image_repository(self) -> str:
        """What buildImage true builds and tags."""
        return self.image or DEFAULT_REPOSITORY

    @property
    def pushes(self) -> bool:
        return self.build_image and self.push_image is not False

    @property
    def minio_volume_size(self) -> str:
        return self.minio_storage_size or DEFAULT_MINIO_SIZE

    @property
    def buckets(self) -> list[str]:
        """The store's bucket names (`<prefix>datasets`, ..., `<prefix>mlflow` with mlflow)."""
        return list(bucket_names(self.bucket_prefix,
                                 ALL_BUCKETS if self.mlflow else BUCKETS).values())

    @property
    def tracking_bucket(self) -> str:
        """The MLflow server's artifact bucket in the store (`<prefix>mlflow`)."""
        return bucket_names(self.bucket_prefix, (TRACKING_BUCKET,))[TRACKING_BUCKET]

    @property
    def monitors(self) -> bool:
        return self.monitoring != "none"

    @property
    def retrains(self) -> bool:
        """Whether the stack runs the retrain CronJob (a schedule, or on drift)."""
        return self.retrain_schedule is not None or self.retrain_on_drift

    @property
    def scrape_namespace(self) -> str:
        return self.monitoring_namespace or DEFAULT_MONITORING_NAMESPACE

    def train_json(self) -> dict[str, Any]:
        """train.json: hyperparameters only (the trainer's TrainConfig keys); seed is fixed."""
        return {
            "dataset": self.dataset,
            "model": self.model,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr": self.learning_rate,
            "seed": 0,
            "checkpoint_every_steps": self.checkpoint_every_steps,
        }
