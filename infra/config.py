"""Stack configuration: every `trainstack:` key, parsed once into a validated dataclass.

Components never read config themselves: they get typed Args built from a StackConfig.
This module reads the keys from the engine and parses single values (infra/values.py);
infra/stack_config.py is the dataclass and the rules between keys, checked on
construction. Secret values never enter the dataclass (StackSecrets carries them as
secret Outputs).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi

from infra import values as v
from infra.fences import MODES as NETWORK_POLICY_MODES
from infra.mlflow_auth import MODES as MLFLOW_ACCESS_MODES
from infra.preflight import ClusterAccess
from infra.stack_config import TRAINING_APIS, StackConfig, warnings

# The trainer's own lists (stdlib-only modules: no torch in the Pulumi program), so a
# model or dataset added there cannot be forgotten here.
from trainer.config import BENCHMARK_DATASETS, MODELS
from trainer.config import DATASETS as TRAINER_DATASETS
from trainer.errors import ConfigError
from trainer.layout import AUTH_TOKEN_ALLOWED, auth_token_problem

NAMESPACE = "trainstack"
DATASETS = tuple(d for d in TRAINER_DATASETS if d not in BENCHMARK_DATASETS)
SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer")
SECRET_KEYS = ("minioRootPassword", "storeSecretKey", "inferenceAuthToken")
invalid = v.invalid  # re-exported: the error every check raises


@dataclass(frozen=True)
class StackSecrets:
    """Secret config values, only as secret Outputs (encrypted in state, masked in logs)."""

    minio_root_password: pulumi.Output[str] | None = None
    store_secret_key: pulumi.Output[str] | None = None
    inference_auth_token: pulumi.Output[str] | None = None


_DATASETS_ALLOWED = (
    f"{', '.join(DATASETS)} ({', '.join(BENCHMARK_DATASETS)} is for benchmarks only: "
    "python -m trainer train --dataset synthetic, or bench/)"
)
_QTY_CPU = "a CPU quantity > 0 such as 1, 0.5 or 500m"
_QTY_MEM = "a memory quantity > 0 such as 2Gi, 512Mi or 1G"
# A training process imports torch and holds a batch and the model: below this the kernel
# OOM-kills it before its first step, so a smaller value is a typo ("1" is one byte).
MIN_WORKER_MEMORY = "512Mi"
_STORAGE_CLASS = ("a StorageClass name: a DNS-1123 subdomain (a-z, 0-9, '-', '.'), such as "
                  "gp3 or ceph.rbd.fast")

# config key -> (dataclass field, parser)
FIELDS: dict[str, tuple[str, v.Parser]] = {
    "workers": ("workers", v.int_at_least(1)),
    "gpusPerWorker": ("gpus_per_worker", v.int_at_least(0)),
    "cpuPerWorker": ("cpu_per_worker", v.nonzero_quantity(v.CPU, _QTY_CPU)),
    "memoryPerWorker": ("memory_per_worker", v.memory_at_least(MIN_WORKER_MEMORY, _QTY_MEM)),
    "epochs": ("epochs", v.int_at_least(1)),
    "batchSize": ("batch_size", v.int_at_least(1)),
    "learningRate": ("learning_rate", v.positive_float),
    "model": ("model", v.choice(MODELS)),
    "dataset": ("dataset", v.choice(DATASETS, _DATASETS_ALLOWED)),
    "datasetSource": ("dataset_source", v.dataset_url),
    "datasetSourceSecret": (
        "dataset_source_secret", v.pattern(v.DNS_SUBDOMAIN, "a Secret name (DNS-1123)")),
    "namespace": ("namespace", v.namespace),
    "buildImage": ("build_image", v.boolean),
    "image": ("image", v.image_reference),
    "pushImage": ("push_image", v.boolean),
    "trainingApi": ("training_api", v.choice(
        TRAINING_APIS, "pytorchjob (Kubeflow Training Operator v1) or trainjob (Kubeflow "
                       "Trainer v2)")),
    "installTrainingOperator": ("install_training_operator", v.boolean),
    "trainingOperatorVersion": ("training_operator_version", v.operator_version),
    "storeEndpoint": ("store_endpoint", v.store_endpoint),
    "storeRegion": ("store_region", v.pattern(v.REGION, "a region name such as eu-west-1")),
    "storeCredentialsSecret": (
        "store_credentials_secret", v.pattern(v.DNS_SUBDOMAIN, "a Secret name (DNS-1123)")),
    "storeAccessKey": (
        "store_access_key",
        v.pattern(v.ACCESS_KEY, "an access key id (1-128 characters, no spaces)")),
    "bucketPrefix": ("bucket_prefix", v.bucket_prefix),
    "minioStorageSize": (
        "minio_storage_size", v.nonzero_quantity(v.BYTES, "a size such as 10Gi")),
    "minioStorageClass": ("minio_storage_class", v.pattern(v.DNS_SUBDOMAIN, _STORAGE_CLASS)),
    "renderYamlTo": ("render_yaml_to", v.directory),
    "bucketsTimeout": ("buckets_timeout", v.duration),
    "ingestTimeout": ("ingest_timeout", v.duration),
    "ingestStorage": ("ingest_storage", v.nonzero_quantity(v.BYTES, "a size such as 4Gi")),
    "dataCacheSize": ("data_cache_size", v.nonzero_quantity(
        v.BYTES, "a size such as 4Gi, at least a few of the dataset's shards (128 MiB each)")),
    "checkpointEverySteps": ("checkpoint_every_steps", v.int_at_least(0)),
    "inferenceReplicas": ("inference_replicas", v.int_at_least(1)),
    "inferenceServiceType": ("inference_service_type", v.choice(SERVICE_TYPES)),
    "inferenceIngressNamespace": (
        "inference_ingress_namespace", v.pattern(v.DNS_LABEL, "a namespace name (DNS-1123 label)")),
    "inferenceAuthSecret": (
        "inference_auth_secret", v.pattern(v.DNS_SUBDOMAIN, "a Secret name (DNS-1123)")),
    "networkPolicy": ("network_policy", v.choice(
        NETWORK_POLICY_MODES, "ingress (default-deny ingress, then the workloads' flows), "
                              "ingress-egress (egress fenced too), none (no NetworkPolicy)")),
    "mlflow": ("mlflow", v.boolean),
    "mlflowAccess": ("mlflow_access", v.choice(
        MLFLOW_ACCESS_MODES, "port-forward (only the stack's pods reach the server; users "
                             "through kubectl port-forward), login (the app's users reach it "
                             "and MLflow asks for the stack's generated login)")),
    "mlflowImage": ("mlflow_image", v.mlflow_image),
    "mlflowStorageClass": ("mlflow_storage_class", v.pattern(v.DNS_SUBDOMAIN, _STORAGE_CLASS)),
    "nodeSelector": ("node_selector", v.node_selector),
    "tolerations": ("tolerations", v.tolerations),
}
KNOWN_KEYS = tuple(FIELDS) + SECRET_KEYS


def parse_config(raw: Mapping[str, Any], secrets: frozenset[str] = frozenset()) -> StackConfig:
    """Validate `{key: value}` (keys without the `trainstack:` prefix, values as stored).

    `secrets` names the SECRET_KEYS that were given (their values are read separately).
    Unknown keys are errors: a typo such as `worker` would otherwise be silently ignored.
    """
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise invalid(unknown[0], "one of " + ", ".join(KNOWN_KEYS), raw[unknown[0]])
    parsed = {
        name: parser(key, raw[key])
        for key, (name, parser) in FIELDS.items()
        if raw.get(key) not in (None, "")
    }
    return StackConfig(**parsed, secrets=frozenset(secrets),
                       given=frozenset(k for k in raw if raw[k] not in (None, "")))


def raw_stack_config() -> dict[str, Any]:
    """Every `trainstack:*` value the engine passed in (pulumi.Config cannot enumerate).

    The CLI hands config to the program through the runtime config map / PULUMI_CONFIG;
    reading both lets unknown keys be reported. Secret values are dropped here: they are
    read separately with Config.get_secret so they stay wrapped in a secret Output.
    """
    from pulumi.runtime import config as runtime_config

    merged = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    prefix = f"{NAMESPACE}:"
    return {
        key[len(prefix):]: value
        for key, value in merged.items()
        if key.startswith(prefix) and key[len(prefix):] not in SECRET_KEYS
    }


def load() -> tuple[StackConfig, StackSecrets]:
    """Read and validate the stack config once, before any resource is registered."""
    from pulumi.runtime import config as runtime_config

    given = set()
    for key in SECRET_KEYS:
        # Check the plaintext now, then use it only as a secret Output.
        plain = runtime_config.get_config(f"{NAMESPACE}:{key}")
        if plain is not None:
            _check_secret(key, plain, _is_secret(f"{NAMESPACE}:{key}"))
            given.add(key)
    settings = parse_config(raw_stack_config(), frozenset(given))
    for message in warnings(settings):
        pulumi.log.warn(message)
    config = pulumi.Config(NAMESPACE)
    return settings, StackSecrets(
        minio_root_password=config.get_secret("minioRootPassword"),
        store_secret_key=config.get_secret("storeSecretKey"),
        inference_auth_token=config.get_secret("inferenceAuthToken"),
    )


def cluster_access() -> ClusterAccess:
    """How the default Kubernetes provider reaches the cluster (its own config keys; the
    kubeconfig may be a secret, so it is read raw, never logged)."""
    from pulumi.runtime import config as runtime_config

    return ClusterAccess(kubeconfig=runtime_config.get_config("kubernetes:kubeconfig"),
                         context=runtime_config.get_config("kubernetes:context"),
                         cluster=runtime_config.get_config("kubernetes:cluster"))


def _is_secret(full_key: str) -> bool:
    from pulumi.runtime import config as runtime_config

    return (runtime_config.is_config_secret(full_key)
            or full_key in runtime_config.get_config_secret_keys_env())


def _check_secret(key: str, value: str, is_secret: bool) -> None:
    if not is_secret:
        # Stored in Pulumi.<stack>.yaml in plain text: refuse it, never echo it.
        raise invalid(key, f"a secret value: pulumi config set --secret {key} ... "
                           "(it is stored unencrypted now; set it again with --secret)",
                      None, secret=True)
    if key == "minioRootPassword" and (len(value) < 8 or value == "minioadmin"):
        # MinIO refuses to start with a root password under 8 characters.
        raise invalid(key, "at least 8 characters, not the well-known default",
                      value, secret=True)
    if key == "storeSecretKey" and not value.strip():
        raise invalid(key, "a non-empty secret access key", value, secret=True)
    if key == "inferenceAuthToken" and auth_token_problem(value):
        raise invalid(key, AUTH_TOKEN_ALLOWED, value, secret=True)


__all__ = ["ConfigError", "StackConfig", "StackSecrets", "cluster_access", "invalid", "load",
           "parse_config"]
