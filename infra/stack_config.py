"""What a valid stack config is: the StackConfig dataclass and the rules between its keys.

Single values are parsed by infra/values.py (through infra/config.py, which reads them
from the engine); each bad combination of keys stops `pulumi up` on construction, before
any resource is registered, naming the key to change and what is allowed there.
`warnings(cfg)` lists what is allowed but risky (logged by infra.config.load).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from infra.config_errors import Default
from infra.values import invalid, parse_image_reference

# The trainer's own contracts (stdlib-only modules: no torch in the Pulumi program).
from trainer.config import CIFAR10_URL
from trainer.layout import (
    ALL_BUCKETS,
    AUTH_TOKEN_ENV,
    BUCKETS,
    TRACKING_BUCKET,
    bucket_names,
    model_name,
)

DEFAULT_REPOSITORY = "trainstack-trainer"
# The PyTorchJob of the Training Operator v1, or the TrainJob of Kubeflow Trainer v2.
TRAINING_APIS = ("pytorchjob", "trainjob")
DEFAULT_MINIO_SIZE = "10Gi"


@dataclass(frozen=True)
class StackConfig:
    """The validated stack settings (defaults = DESIGN.md's Pulumi stack contract).

    None means "not set": several keys only apply in one mode (MinIO's, the image's), and
    setting one where it does not apply is an error rather than silently ignored.
    """

    workers: int = 2  # training pods: Master + workers-1 Workers
    gpus_per_worker: int = 0
    cpu_per_worker: str = "1"  # request = limit
    # request = limit; also the /dev/shm size. 3Gi, not DESIGN.md's 2Gi: resnet18 on
    # CIFAR-10 in fp32 peaks at ~2 GiB RSS per rank (bench/train_memory.py), no margin.
    memory_per_worker: str = "3Gi"
    epochs: int = 10
    batch_size: int = 128
    learning_rate: float = 0.1
    model: str = "resnet18"
    dataset: str = "cifar10"
    dataset_source: str | None = None  # None: the dataset's own default (CIFAR-10 URL)
    # Or an existing Secret holding the URL (key DATASET_SOURCE_ENV): one with credentials.
    dataset_source_secret: str | None = None
    namespace: str = "trainstack"
    build_image: bool = True  # False: `image` is a prebuilt reference, run as given
    image: str | None = None  # build: repository (default trainstack-trainer); else reference
    push_image: bool | None = None  # build only; None: true
    training_api: str = "pytorchjob"  # TRAINING_APIS
    install_training_operator: bool = True  # the training_api's operator
    training_operator_version: str = "v1.8.1"
    store_endpoint: str | None = None  # None: the in-cluster MinIO
    store_region: str | None = None
    store_credentials_secret: str | None = None  # an existing Secret the workloads read
    store_access_key: str | None = None  # with the secret storeSecretKey: the stack's Secret
    bucket_prefix: str = ""
    minio_storage_size: str | None = None  # None: 10Gi (in-cluster MinIO only)
    minio_storage_class: str | None = None  # None: the cluster's default StorageClass
    render_yaml_to: str | None = None  # a directory: write YAML instead of applying
    buckets_timeout: str = "15m"  # how long `pulumi up` waits for the bucket Job
    ingest_timeout: str = "30m"  # ... and for the ingest Job (170 MB download + image pull)
    ingest_storage: str = "4Gi"  # ephemeral storage of the ingest Job: download + unpacked
    # Streaming datasets (trainer.streaming): each training pod's read-ahead of shards on
    # local disk (an emptyDir), and the steps between mid-epoch checkpoints.
    data_cache_size: str = "4Gi"
    checkpoint_every_steps: int = 500
    inference_replicas: int = 1
    inference_service_type: str = "NodePort"
    inference_ingress_namespace: str | None = None  # only its pods reach the app
    inference_auth_secret: str | None = None  # an existing Secret with the app's token
    network_policy: str = "ingress"  # NETWORK_POLICY_MODES
    mlflow: bool = True  # an MLflow tracking server; workloads get MLFLOW_TRACKING_URI
    mlflow_image: str | None = None  # None: infra.mlflow_server.DEFAULT_IMAGE (mlflow only)
    mlflow_access: str | None = None  # None: port-forward (infra.mlflow_auth.MODES)
    mlflow_storage_class: str | None = None  # its PVC's; None: the cluster's default
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    secrets: frozenset[str] = frozenset()  # which SECRET_KEYS were given (never their values)
    # The keys the user set (parse_config); None: unknown, every value counts as set. Only
    # for messages: a default the user never typed is shown as one.
    given: frozenset[str] | None = field(default=None, compare=False)

    def __post_init__(self):
        check_combinations(self)

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


MINIO_ONLY = {"minioStorageSize": "minio_storage_size", "minioStorageClass": "minio_storage_class"}
SECRET_SHAPE = "keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
PLAINTEXT_IN_FILES = ("renderYamlTo writes every object to files, so a Secret the stack made "
                      "would be written there in plain text")


def check_combinations(cfg: StackConfig) -> None:
    """Every rule between keys; raises ConfigError naming the key to change."""
    _check_image(cfg)
    if cfg.store_endpoint:
        _check_external_store(cfg)
    else:
        _check_in_cluster_store(cfg)
    if cfg.render_yaml_to:
        _check_render(cfg)
    _check_inference_access(cfg)
    _check_mlflow(cfg)
    _check_dataset_source(cfg)
    _check_training_api(cfg)


def _as_set(cfg: StackConfig, key: str, value: Any) -> Any:
    """`value` of `key` for a message: marked as a default when the user never set it."""
    return value if cfg.given is None or key in cfg.given else Default(value)


def warnings(cfg: StackConfig) -> list[str]:
    ref = parse_image_reference(cfg.image) if not cfg.build_image and cfg.image else None
    if ref and not ref.digest:
        return [(f"trainstack:image {cfg.image!r} is a tag, not a digest: a tag can move, so "
                "pods started at different times may run different code; pods pull it on "
                "every start (imagePullPolicy Always). Prefer <image>@sha256:<digest>.")]
    return []


def _check_image(cfg: StackConfig) -> None:
    if cfg.build_image:
        _check_build_repository(cfg)
        return
    if cfg.push_image is not None:
        raise invalid("pushImage", "unset when buildImage is false (nothing is built or pushed)",
                      cfg.push_image)
    example = "registry.example.com/ml/trainstack-trainer@sha256:<64 hex digits>"
    if not cfg.image:
        raise invalid("image", f"a prebuilt image reference such as {example} "
                               "(buildImage false runs it as given)", None)
    _check_pinned_reference("image", cfg.image, example)


def _check_pinned_reference(key: str, reference: str, example: str) -> None:
    ref = parse_image_reference(reference)
    if ref.registry is None:
        # Without a host Docker pulls docker.io/library/<name>: a late ImagePullBackOff
        # after MinIO is up, or someone else's image. Name the registry, even Docker Hub.
        raise invalid(key, f"a reference that names its registry host, such as {example} "
                           "(docker.io/<you>/<name>@sha256:... for Docker Hub)", reference)
    if not ref.tag and not ref.digest:
        raise invalid(key, f"a reference with a digest (preferred: {example}) or a tag; "
                           "without either it means the moving tag latest", reference)


def _check_build_repository(cfg: StackConfig) -> None:
    ref = parse_image_reference(cfg.image_repository)
    if ref.tag or ref.digest:
        raise invalid("image", "an image repository without tag or digest when buildImage is "
                               "true (the stack tags what it builds)", cfg.image)
    # A bare name would be pushed to docker.io/library/<name>, which fails half-way through
    # `pulumi up` (after MinIO is up); refuse it before any resource is registered.
    if cfg.pushes and "/" not in cfg.image_repository:
        raise invalid(
            "image",
            "a registry path such as registry.example.com/you/trainstack-trainer when "
            "pushImage is true (or pushImage false for minikube)",
            _as_set(cfg, "image", cfg.image_repository),
        )


def _check_external_store(cfg: StackConfig) -> None:
    for key, name in MINIO_ONLY.items():
        if getattr(cfg, name) is not None:
            raise invalid(key, "unset when storeEndpoint is set (it configures the in-cluster "
                               "MinIO, which is not deployed then)", getattr(cfg, name))
    if "minioRootPassword" in cfg.secrets:
        raise invalid("minioRootPassword", "unset when storeEndpoint is set (the in-cluster "
                                           "MinIO is not deployed then)", None, secret=True)
    keys_given = cfg.store_access_key is not None or "storeSecretKey" in cfg.secrets
    if cfg.store_credentials_secret and keys_given:
        raise invalid("storeCredentialsSecret", "either storeCredentialsSecret or storeAccessKey "
                      "+ storeSecretKey, not both (credentials given twice)",
                      cfg.store_credentials_secret)
    if keys_given and cfg.store_access_key is None:
        raise invalid("storeAccessKey", "set together with storeSecretKey", None)
    if keys_given and "storeSecretKey" not in cfg.secrets:
        raise invalid("storeSecretKey", "set together with storeAccessKey: "
                                        "pulumi config set --secret storeSecretKey ...", None)
    if not cfg.store_credentials_secret and not keys_given:
        raise invalid("storeCredentialsSecret", f"the name of an existing Secret ({SECRET_SHAPE}) "
                      "or storeAccessKey + storeSecretKey: storeEndpoint needs credentials "
                      "(workload identity is not supported, see docs/operations.md)", None)


def _check_in_cluster_store(cfg: StackConfig) -> None:
    if cfg.store_region is not None:
        raise invalid("storeRegion", "unset without storeEndpoint (the in-cluster MinIO has no "
                                     "region)", cfg.store_region)
    if cfg.store_access_key is not None:
        raise invalid("storeAccessKey", "unset without storeEndpoint (the in-cluster MinIO's "
                                        "credentials are generated, or minioRootPassword, or "
                                        "storeCredentialsSecret)", cfg.store_access_key)
    if "storeSecretKey" in cfg.secrets:
        raise invalid("storeSecretKey", "unset without storeEndpoint (use minioRootPassword "
                                        "for the in-cluster MinIO)", None, secret=True)
    if cfg.store_credentials_secret and "minioRootPassword" in cfg.secrets:
        raise invalid("minioRootPassword", "unset when storeCredentialsSecret names the "
                                           "MinIO credentials (credentials given twice)",
                      None, secret=True)


def _check_render(cfg: StackConfig) -> None:
    if cfg.install_training_operator:
        operator = ("Training Operator" if cfg.training_api == "pytorchjob"
                    else "Kubeflow Trainer v2")
        raise invalid("installTrainingOperator", "false when renderYamlTo is set: install the "
                      f"{operator} with your GitOps tool from its pinned overlay "
                      "(docs/operations.md, GitOps)",
                      _as_set(cfg, "installTrainingOperator", True))
    for key in ("minioRootPassword", "storeSecretKey"):
        if key in cfg.secrets:
            raise invalid(key, f"unset when renderYamlTo is set ({PLAINTEXT_IN_FILES}); create "
                               f"the Secret yourself ({SECRET_SHAPE}) and set "
                               "storeCredentialsSecret", None, secret=True)
    if "inferenceAuthToken" in cfg.secrets:
        raise invalid("inferenceAuthToken", f"unset when renderYamlTo is set "
                      f"({PLAINTEXT_IN_FILES}); create the Secret yourself (key "
                      f"{AUTH_TOKEN_ENV}) and set inferenceAuthSecret", None, secret=True)
    if not cfg.store_credentials_secret:
        raise invalid("storeCredentialsSecret", f"the name of an existing Secret ({SECRET_SHAPE}) "
                      f"when renderYamlTo is set: {PLAINTEXT_IN_FILES} (create it with "
                      "kubectl, a SealedSecret or External Secrets)", None)
    if cfg.build_image and not cfg.pushes:
        raise invalid("pushImage", "true when renderYamlTo is set (the cluster that applies "
                                   "the files pulls the image from a registry), or buildImage "
                                   "false with a prebuilt image", False)


def _check_inference_access(cfg: StackConfig) -> None:
    if "inferenceAuthToken" in cfg.secrets and cfg.inference_auth_secret:
        raise invalid("inferenceAuthSecret", "either inferenceAuthSecret or inferenceAuthToken, "
                      "not both (the token given twice)", cfg.inference_auth_secret)
    namespace = cfg.inference_ingress_namespace
    if namespace is None:
        return
    if cfg.network_policy == "none":
        raise invalid("inferenceIngressNamespace", "unset when networkPolicy is none (it is "
                      "enforced by the stack's NetworkPolicies)", namespace)
    if cfg.inference_service_type != "ClusterIP":
        raise invalid("inferenceServiceType", "ClusterIP when inferenceIngressNamespace is set "
                      "(only that namespace's Ingress controller may reach the app, so a "
                      "NodePort or LoadBalancer would answer nobody)",
                      _as_set(cfg, "inferenceServiceType", cfg.inference_service_type))


def _check_mlflow(cfg: StackConfig) -> None:
    if not cfg.mlflow:
        for key, value in (("mlflowImage", cfg.mlflow_image),
                           ("mlflowStorageClass", cfg.mlflow_storage_class),
                           ("mlflowAccess", cfg.mlflow_access)):
            if value is not None:
                raise invalid(key, "unset when mlflow is false (no MLflow server is deployed)",
                              value)
        return
    if cfg.mlflow_login and cfg.render_yaml_to:
        raise invalid("mlflowAccess", f"port-forward when renderYamlTo is set (the login is a "
                      f"generated Secret: {PLAINTEXT_IN_FILES})", cfg.mlflow_access)
    if cfg.mlflow_image is not None:
        _check_pinned_reference("mlflowImage", cfg.mlflow_image,
                                "ghcr.io/mlflow/mlflow:<tag>@sha256:<64 hex digits>")


def _check_dataset_source(cfg: StackConfig) -> None:
    if cfg.dataset_source_secret is None:
        return
    if cfg.dataset_source is not None:
        raise invalid("datasetSourceSecret", "either datasetSourceSecret or datasetSource, not "
                      "both (the source given twice)", cfg.dataset_source_secret)
    if cfg.dataset == "digits":
        raise invalid("datasetSourceSecret", "unset with dataset digits (it ships with the "
                      "trainer: nothing is downloaded)", cfg.dataset_source_secret)


def _check_training_api(cfg: StackConfig) -> None:
    default_version = next(f.default for f in fields(StackConfig)
                           if f.name == "training_operator_version")
    # Trainer v2 is installed at the one version the stack is checked with.
    if cfg.training_api == "trainjob" and cfg.training_operator_version != default_version:
        raise invalid("trainingOperatorVersion", "unset when trainingApi is trainjob (it "
                      "pins the Training Operator v1; Kubeflow Trainer v2 is installed at "
                      "the version the stack is checked with, see docs/operations.md)",
                      cfg.training_operator_version)
