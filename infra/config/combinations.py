"""The rules between `trainstack:` keys: each bad combination stops `pulumi up` when the
StackConfig is made, before any resource is registered, naming the key to change and
what is allowed there. `warnings()` lists what is allowed but risky (logged by
infra.config.keys.load).

A mixin of StackConfig (infra/config/stack_config.py), so the rules read the settings by
name and this module needs nothing of the dataclass but its fields.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from infra.config import quantities
from infra.config.errors import Default
from infra.config.values import invalid, parse_image_reference, quantity_bytes
from trainer.contract.env import CPU_TORCH_VARIANT, GPU_TORCH_VARIANT
from trainer.contract.layout import AUTH_TOKEN_ENV
from trainer.limits.footprint import STACK_IMAGE_SIZES, Footprint, quantity, stack_data_bytes

MINIO_ONLY = {"minioStorageSize": "minio_storage_size", "minioStorageClass": "minio_storage_class"}
SECRET_SHAPE = "keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
PLAINTEXT_IN_FILES = ("renderYamlTo writes every object to files, so a Secret the stack made "
                      "would be written there in plain text")


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


def _memory(size) -> str:
    """Bytes as Kubernetes writes them (6442450944 -> 6Gi)."""
    whole = int(size)
    return quantities.canonical(f"{whole // 1024}Ki") if whole % 1024 == 0 else str(whole)


class KeyRules:
    """Every rule between keys; StackConfig calls :meth:`check_combinations` on construction."""

    def check_combinations(self) -> None:
        """Every rule between keys; raises ConfigError naming the key to change."""
        self._check_image()
        if self.store_endpoint:
            self._check_external_store()
        else:
            self._check_in_cluster_store()
        if self.render_yaml_to:
            self._check_render()
        self._check_inference_access()
        self._check_mlflow()
        self._check_dataset_source()
        self._check_training_api()
        self._check_training_memory()
        self._check_monitoring()
        self._check_queue()
        self._check_retraining()

    def _as_set(self, key: str, value: Any) -> Any:
        """`value` of `key` for a message: marked as a default when the user never set it."""
        return value if self.given is None or key in self.given else Default(value)

    def warnings(self) -> list[str]:
        ref = parse_image_reference(self.image) if not self.build_image and self.image else None
        found = []
        if ref and not ref.digest:
            found.append(f"trainstack:image {self.image!r} is a tag, not a digest: a tag can "
                         "move, so pods started at different times may run different code; "
                         "pods pull it on every start (imagePullPolicy Always). Prefer "
                         "<image>@sha256:<digest>.")
        if ref and self.gpus_per_worker > 0:
            # The stack cannot look inside a prebuilt image; the trainer stops at start if
            # it was given GPUs its torch cannot see.
            found.append(f"trainstack:gpusPerWorker {self.gpus_per_worker} with buildImage "
                         f"false: trainstack:image must be the GPU build of trainer/Dockerfile "
                         f"(--build-arg TORCH_VARIANT={GPU_TORCH_VARIANT} --build-arg "
                         "TORCH_INDEX_URL=); the default build is CPU-only, and its training "
                         "pods stop at start with one line instead of training on the CPU.")
        return found

    def _check_image(self) -> None:
        if self.build_image:
            self._check_build_repository()
            return
        if self.push_image is not None:
            raise invalid("pushImage", "unset when buildImage is false (nothing is built or pushed)",
                          self.push_image)
        example = "registry.example.com/ml/trainstack-trainer@sha256:<64 hex digits>"
        if not self.image:
            raise invalid("image", f"a prebuilt image reference such as {example} "
                                   "(buildImage false runs it as given)", None)
        _check_pinned_reference("image", self.image, example)
        tag = parse_image_reference(self.image).tag or ""
        if self.gpus_per_worker > 0 and tag.split("-", 1)[0] == CPU_TORCH_VARIANT:
            # `cpu-<hash>` is what the stack tags its own CPU builds: known not to use GPUs.
            raise invalid("image", f"the GPU build of the trainer image when gpusPerWorker is "
                          f"> 0 (TORCH_VARIANT={GPU_TORCH_VARIANT}); tag {tag!r} names the CPU "
                          "build, whose torch has no CUDA", self.image)

    def _check_build_repository(self) -> None:
        ref = parse_image_reference(self.image_repository)
        if ref.tag or ref.digest:
            raise invalid("image", "an image repository without tag or digest when buildImage is "
                                   "true (the stack tags what it builds)", self.image)
        # A bare name would be pushed to docker.io/library/<name>, which fails half-way through
        # `pulumi up` (after MinIO is up); refuse it before any resource is registered.
        if self.pushes and "/" not in self.image_repository:
            raise invalid(
                "image",
                "a registry path such as registry.example.com/you/trainstack-trainer when "
                "pushImage is true (or pushImage false for minikube)",
                self._as_set("image", self.image_repository),
            )

    def _check_external_store(self) -> None:
        for key, name in MINIO_ONLY.items():
            if getattr(self, name) is not None:
                raise invalid(key, "unset when storeEndpoint is set (it configures the in-cluster "
                                   "MinIO, which is not deployed then)", getattr(self, name))
        if "minioRootPassword" in self.secrets:
            raise invalid("minioRootPassword", "unset when storeEndpoint is set (the in-cluster "
                                               "MinIO is not deployed then)", None, secret=True)
        keys_given = self.store_access_key is not None or "storeSecretKey" in self.secrets
        if self.store_credentials_secret and keys_given:
            raise invalid("storeCredentialsSecret", "either storeCredentialsSecret or storeAccessKey "
                          "+ storeSecretKey, not both (credentials given twice)",
                          self.store_credentials_secret)
        if keys_given and self.store_access_key is None:
            raise invalid("storeAccessKey", "set together with storeSecretKey", None)
        if keys_given and "storeSecretKey" not in self.secrets:
            raise invalid("storeSecretKey", "set together with storeAccessKey: "
                                            "pulumi config set --secret storeSecretKey ...", None)
        if not self.store_credentials_secret and not keys_given:
            raise invalid("storeCredentialsSecret", f"the name of an existing Secret ({SECRET_SHAPE}) "
                          "or storeAccessKey + storeSecretKey: storeEndpoint needs credentials "
                          "(workload identity is not supported, see docs/operations.md)", None)

    def _check_in_cluster_store(self) -> None:
        if self.store_region is not None:
            raise invalid("storeRegion", "unset without storeEndpoint (the in-cluster MinIO has no "
                                         "region)", self.store_region)
        if self.store_access_key is not None:
            raise invalid("storeAccessKey", "unset without storeEndpoint (the in-cluster MinIO's "
                                            "credentials are generated, or minioRootPassword, or "
                                            "storeCredentialsSecret)", self.store_access_key)
        if "storeSecretKey" in self.secrets:
            raise invalid("storeSecretKey", "unset without storeEndpoint (use minioRootPassword "
                                            "for the in-cluster MinIO)", None, secret=True)
        if self.store_credentials_secret and "minioRootPassword" in self.secrets:
            raise invalid("minioRootPassword", "unset when storeCredentialsSecret names the "
                                               "MinIO credentials (credentials given twice)",
                          None, secret=True)

    def _check_render(self) -> None:
        if self.install_training_operator:
            operator = ("Training Operator" if self.training_api == "pytorchjob"
                        else "Kubeflow Trainer v2")
            raise invalid("installTrainingOperator", "false when renderYamlTo is set: install the "
                          f"{operator} with your GitOps tool from its pinned overlay "
                          "(docs/operations.md, GitOps)",
                          self._as_set("installTrainingOperator", True))
        for key in ("minioRootPassword", "storeSecretKey"):
            if key in self.secrets:
                raise invalid(key, f"unset when renderYamlTo is set ({PLAINTEXT_IN_FILES}); create "
                                   f"the Secret yourself ({SECRET_SHAPE}) and set "
                                   "storeCredentialsSecret", None, secret=True)
        if "inferenceAuthToken" in self.secrets:
            raise invalid("inferenceAuthToken", f"unset when renderYamlTo is set "
                          f"({PLAINTEXT_IN_FILES}); create the Secret yourself (key "
                          f"{AUTH_TOKEN_ENV}) and set inferenceAuthSecret", None, secret=True)
        if not self.store_credentials_secret:
            raise invalid("storeCredentialsSecret", f"the name of an existing Secret ({SECRET_SHAPE}) "
                          f"when renderYamlTo is set: {PLAINTEXT_IN_FILES} (create it with "
                          "kubectl, a SealedSecret or External Secrets)", None)
        if self.build_image and not self.pushes:
            raise invalid("pushImage", "true when renderYamlTo is set (the cluster that applies "
                                       "the files pulls the image from a registry), or buildImage "
                                       "false with a prebuilt image", False)

    def _check_inference_access(self) -> None:
        if "inferenceAuthToken" in self.secrets and self.inference_auth_secret:
            raise invalid("inferenceAuthSecret", "either inferenceAuthSecret or inferenceAuthToken, "
                          "not both (the token given twice)", self.inference_auth_secret)
        namespace = self.inference_ingress_namespace
        if namespace is None:
            return
        if self.network_policy == "none":
            raise invalid("inferenceIngressNamespace", "unset when networkPolicy is none (it is "
                          "enforced by the stack's NetworkPolicies)", namespace)
        if self.inference_service_type != "ClusterIP":
            raise invalid("inferenceServiceType", "ClusterIP when inferenceIngressNamespace is set "
                          "(only that namespace's Ingress controller may reach the app, so a "
                          "NodePort or LoadBalancer would answer nobody)",
                          self._as_set("inferenceServiceType", self.inference_service_type))

    def _check_mlflow(self) -> None:
        if not self.mlflow:
            for key, value in (("mlflowImage", self.mlflow_image),
                               ("mlflowStorageClass", self.mlflow_storage_class),
                               ("mlflowAccess", self.mlflow_access)):
                if value is not None:
                    raise invalid(key, "unset when mlflow is false (no MLflow server is deployed)",
                                  value)
            return
        if self.mlflow_login and self.render_yaml_to:
            raise invalid("mlflowAccess", f"port-forward when renderYamlTo is set (the login is a "
                          f"generated Secret: {PLAINTEXT_IN_FILES})", self.mlflow_access)
        if self.mlflow_image is not None:
            _check_pinned_reference("mlflowImage", self.mlflow_image,
                                    "ghcr.io/mlflow/mlflow:<tag>@sha256:<64 hex digits>")

    def _check_dataset_source(self) -> None:
        if self.dataset_source_secret is None:
            return
        if self.dataset_source is not None:
            raise invalid("datasetSourceSecret", "either datasetSourceSecret or datasetSource, not "
                          "both (the source given twice)", self.dataset_source_secret)
        if self.dataset == "digits":
            raise invalid("datasetSourceSecret", "unset with dataset digits (it ships with the "
                          "trainer: nothing is downloaded)", self.dataset_source_secret)

    def _check_training_api(self) -> None:
        default_version = next(f.default for f in fields(self)
                               if f.name == "training_operator_version")
        # Trainer v2 is installed at the one version the stack is checked with.
        if self.training_api == "trainjob" and self.training_operator_version != default_version:
            raise invalid("trainingOperatorVersion", "unset when trainingApi is trainjob (it "
                          "pins the Training Operator v1; Kubeflow Trainer v2 is installed at "
                          "the version the stack is checked with, see docs/operations.md)",
                          self.training_operator_version)

    def _check_training_memory(self) -> None:
        """A training pod with less memory than a training process of this model needs at
        the dataset's image size and batchSize (trainer.limits.footprint) would be refused
        by the trainer, or OOM-killed, on every restart. Measured on CPUs: a GPU process
        keeps its activations on the GPU and its host memory is not measured."""
        if self.gpus_per_worker > 0:
            return
        size = STACK_IMAGE_SIZES[self.dataset]
        footprint = Footprint(self.model, size, self.batch_size, peers=self.workers > 1,
                              tracking=self.mlflow)
        data, holding = stack_data_bytes(self.dataset)
        need = footprint.need(data)
        if quantity_bytes(self.memory_per_worker) >= need:
            return
        mates = f", with {self.workers} workers (DDP)" if self.workers > 1 else ""
        tracked = " and MLflow tracking" if self.mlflow else ""
        raise invalid("memoryPerWorker", (
            f"at least {quantity(need)} for model {self.model} with batchSize "
            f"{self.batch_size} at {size} px (dataset {self.dataset}){mates}{tracked}: a "
            f"training process needs about {-(-need // 2**20):,} MiB ({holding}; measured "
            "figures in trainer/limits/footprint.py); or a smaller batchSize or model"),
            self._as_set("memoryPerWorker", self.memory_per_worker))

    def _check_monitoring(self) -> None:
        if self.monitoring != "none":
            return
        for key, value in (("monitoringNamespace", self.monitoring_namespace),
                           ("monitoringLabels", self.monitoring_labels or None),
                           ("driftAlertWindows", self.drift_alert_windows),
                           ("accuracyDropAlert", self.accuracy_drop_alert)):
            if value is not None:
                raise invalid(key, "unset when monitoring is none (it configures the "
                              "Prometheus objects of monitoring prometheus-operator)", value)

    def _check_queue(self) -> None:
        if self.queue_quota is None:
            return
        if self.queue is None:
            raise invalid("queue", "the name of the LocalQueue queueQuota declares (a DNS-1123 "
                          "label), such as team-a", None)
        # Kueue admits a job whole or not at all: a quota below its requests queues it forever.
        needs = {"cpu": quantities.value(self.cpu_per_worker) * self.workers,
                 "memory": quantities.value(self.memory_per_worker) * self.workers,
                 "gpus": self.gpus_per_worker * self.workers}
        short = [name for name, need in needs.items()
                 if quantities.value(str(self.queue_quota[name])) < need]
        if short:
            raise invalid("queueQuota", f"a quota that holds the whole training job: "
                          f"{self.workers} workers need cpu {needs['cpu']:g}, memory "
                          f"{_memory(needs['memory'])}, gpus {needs['gpus']} "
                          f"(here {short[0]} is less); Kueue admits a job whole or not at all, "
                          "so it would wait forever", self.queue_quota)

    def _check_retraining(self) -> None:
        if self.promotion_tolerance is not None and not self.promotion_gate:
            raise invalid("promotionTolerance", "unset when promotionGate is false (nothing "
                          "is compared: what was published last is served)",
                          self.promotion_tolerance)
        if self.retrain_on_drift and self.monitoring == "none":
            raise invalid("retrainOnDrift", "false while monitoring is none: retraining on "
                          "drift follows the drift alert (driftAlertWindows checks in a row); "
                          "set monitoring prometheus-operator first", True)
        if self.retrain_cooldown is not None and not self.retrain_on_drift:
            raise invalid("retrainCooldown", "unset unless retrainOnDrift is true (it spaces "
                          "retrains on drift)", self.retrain_cooldown)
