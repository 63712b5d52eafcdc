"""Stack configuration: every `trainstack:` key, parsed once into a validated dataclass.

`pulumi config set workers 3` stores the *string* "3", structured values (nodeSelector,
tolerations) arrive as JSON strings, so every parser accepts strings first. Components
never read config themselves: they get typed Args built from a StackConfig.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import pulumi

# The trainer's own lists and contracts (stdlib-only modules: no torch in the Pulumi
# program), so a model or dataset added there cannot be forgotten here.
from trainer.config import CIFAR10_URL, MODELS
from trainer.config import DATASETS as TRAINER_DATASETS
from trainer.errors import ConfigError
from trainer.layout import model_name

NAMESPACE = "trainstack"
# `synthetic` is random data for benchmarks: a cluster run on it would publish a model
# that the app serves as if it had learned something.
BENCHMARK_DATASETS = ("synthetic",)
DATASETS = tuple(d for d in TRAINER_DATASETS if d not in BENCHMARK_DATASETS)
SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer")
SECRET_KEYS = ("minioRootPassword",)

_CPU = re.compile(r"^(\d+(\.\d+)?|\d+m)$")
_BYTES = re.compile(r"^\d+(\.\d+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# A repository name: optional registry host[:port], then lowercase path components.
_REPOSITORY = re.compile(
    r"^([a-zA-Z0-9.-]+(:\d+)?/)?[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*$"
)
_VERSION = re.compile(r"^v\d+\.\d+\.\d+$")
_TOLERATION_KEYS = {"key", "operator", "value", "effect", "tolerationSeconds"}
_TOLERATION_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


def invalid(key: str, allowed: str, got: Any, secret: bool = False) -> ConfigError:
    """The error for an invalid `trainstack:` setting: names the key and what is allowed."""
    shown = "(secret value not shown)" if secret else f"= {got!r}"
    return ConfigError(f"invalid config trainstack:{key} {shown}: allowed: {allowed}", key=key)


@dataclass(frozen=True)
class StackConfig:
    """The validated stack settings (defaults = DESIGN.md's Pulumi stack contract)."""

    workers: int = 2
    gpus_per_worker: int = 0
    cpu_per_worker: str = "1"
    memory_per_worker: str = "2Gi"
    epochs: int = 10
    batch_size: int = 128
    learning_rate: float = 0.1
    model: str = "resnet18"
    dataset: str = "cifar10"
    dataset_source: str | None = None  # None: the dataset's own default (CIFAR-10 URL)
    namespace: str = "trainstack"
    image: str = "trainstack-trainer"
    push_image: bool = True
    install_training_operator: bool = True
    training_operator_version: str = "v1.8.1"
    minio_storage_size: str = "10Gi"
    minio_storage_class: str | None = None
    inference_replicas: int = 1
    inference_service_type: str = "NodePort"
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)

    @property
    def model_name(self) -> str:
        """`<model>-<dataset>`: the store prefix the trainer publishes and the app serves."""
        return model_name(self.model, self.dataset)

    @property
    def ingest_source(self) -> str | None:
        """What the ingest Job downloads: cifar10 defaults to the official archive."""
        if self.dataset_source:
            return self.dataset_source
        return CIFAR10_URL if self.dataset == "cifar10" else None

    def train_json(self) -> dict[str, Any]:
        """train.json: hyperparameters only (the trainer's TrainConfig keys); seed is fixed."""
        return {
            "dataset": self.dataset,
            "model": self.model,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr": self.learning_rate,
            "seed": 0,
        }


def _int(minimum: int) -> Callable[[str, Any], int]:
    def parse(key: str, raw: Any) -> int:
        text = str(raw).strip()
        if isinstance(raw, bool) or not re.fullmatch(r"[+-]?\d+", text) or int(text) < minimum:
            raise invalid(key, f"an integer >= {minimum}", raw)
        return int(text)

    return parse


def _float_positive(key: str, raw: Any) -> float:
    try:
        value = float(str(raw))
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise invalid(key, "a number > 0 (e.g. 0.1)", raw)
    return value


def _bool(key: str, raw: Any) -> bool:
    text = str(raw).strip().lower()
    if text not in ("true", "false"):
        raise invalid(key, "true or false", raw)
    return text == "true"


def _choice(options: tuple[str, ...], allowed: str | None = None) -> Callable[[str, Any], str]:
    def parse(key: str, raw: Any) -> str:
        if raw not in options:
            raise invalid(key, allowed or ", ".join(options), raw)
        return raw

    return parse


def _pattern(regex: re.Pattern, allowed: str) -> Callable[[str, Any], str]:
    def parse(key: str, raw: Any) -> str:
        text = str(raw)
        if not regex.fullmatch(text):
            raise invalid(key, allowed, raw)
        return text

    return parse


def _nonzero_quantity(regex: re.Pattern, allowed: str) -> Callable[[str, Any], str]:
    base = _pattern(regex, allowed)

    def parse(key: str, raw: Any) -> str:
        text = base(key, raw)
        if float(re.match(r"[\d.]+", text).group()) <= 0:
            raise invalid(key, allowed, raw)
        return text

    return parse


def _url(key: str, raw: Any) -> str:
    parsed = urlparse(str(raw))
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise invalid(key, "an http(s) URL of a file in the dataset's format", raw)
    return str(raw)


def _json(key: str, raw: Any, allowed: str) -> Any:
    if not isinstance(raw, str):
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        raise invalid(key, allowed, raw) from None


def _node_selector(key: str, raw: Any) -> dict[str, str]:
    allowed = 'a JSON object of label strings, e.g. {"nvidia.com/gpu.present": "true"}'
    value = _json(key, raw, allowed)
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise invalid(key, allowed, raw)
    return value


def _tolerations(key: str, raw: Any) -> list[dict[str, Any]]:
    allowed = (
        'a JSON list of tolerations with keys key/operator/value/effect/tolerationSeconds, '
        f'operator Exists|Equal, effect {"|".join(_TOLERATION_EFFECTS)}'
    )
    value = _json(key, raw, allowed)
    if not isinstance(value, list):
        raise invalid(key, allowed, raw)
    for item in value:
        if (
            not isinstance(item, dict)
            or not set(item) <= _TOLERATION_KEYS
            or item.get("operator", "Equal") not in ("Exists", "Equal")
            or item.get("effect", "NoSchedule") not in _TOLERATION_EFFECTS
        ):
            raise invalid(key, allowed, raw)
    return value


_DATASETS_ALLOWED = (
    f"{', '.join(DATASETS)} ({', '.join(BENCHMARK_DATASETS)} is for benchmarks only: "
    "python -m trainer train --dataset synthetic, or bench/)"
)
_QTY_CPU = "a CPU quantity > 0 such as 1, 0.5 or 500m"
_QTY_MEM = "a memory quantity > 0 such as 2Gi, 512Mi or 1G"

# config key -> (dataclass field, parser)
FIELDS: dict[str, tuple[str, Callable[[str, Any], Any]]] = {
    "workers": ("workers", _int(1)),
    "gpusPerWorker": ("gpus_per_worker", _int(0)),
    "cpuPerWorker": ("cpu_per_worker", _nonzero_quantity(_CPU, _QTY_CPU)),
    "memoryPerWorker": ("memory_per_worker", _nonzero_quantity(_BYTES, _QTY_MEM)),
    "epochs": ("epochs", _int(1)),
    "batchSize": ("batch_size", _int(1)),
    "learningRate": ("learning_rate", _float_positive),
    "model": ("model", _choice(MODELS)),
    "dataset": ("dataset", _choice(DATASETS, _DATASETS_ALLOWED)),
    "datasetSource": ("dataset_source", _url),
    "namespace": ("namespace", _pattern(_DNS_LABEL, "a DNS-1123 label (a-z, 0-9, '-')")),
    "image": ("image", _pattern(_REPOSITORY, "an image repository name without tag")),
    "pushImage": ("push_image", _bool),
    "installTrainingOperator": ("install_training_operator", _bool),
    "trainingOperatorVersion": (
        "training_operator_version",
        _pattern(_VERSION, "a release tag such as v1.8.1"),
    ),
    "minioStorageSize": ("minio_storage_size", _nonzero_quantity(_BYTES, "a size such as 10Gi")),
    "minioStorageClass": ("minio_storage_class", _pattern(_DNS_LABEL, "a StorageClass name")),
    "inferenceReplicas": ("inference_replicas", _int(1)),
    "inferenceServiceType": ("inference_service_type", _choice(SERVICE_TYPES)),
    "nodeSelector": ("node_selector", _node_selector),
    "tolerations": ("tolerations", _tolerations),
}
KNOWN_KEYS = tuple(FIELDS) + SECRET_KEYS


def parse_config(raw: Mapping[str, Any]) -> StackConfig:
    """Validate `{key: value}` (keys without the `trainstack:` prefix, values as stored).

    Unknown keys are errors: a typo such as `worker` would otherwise be silently ignored.
    """
    unknown = sorted(set(raw) - set(KNOWN_KEYS))
    if unknown:
        raise invalid(unknown[0], "one of " + ", ".join(KNOWN_KEYS), raw[unknown[0]])
    values = {
        name: parser(key, raw[key])
        for key, (name, parser) in FIELDS.items()
        if raw.get(key) not in (None, "")
    }
    return _check_image(StackConfig(**values))


def _check_image(cfg: StackConfig) -> StackConfig:
    # A bare name would be pushed to docker.io/library/<name>, which fails half-way through
    # `pulumi up` (after MinIO is up); refuse it before any resource is registered.
    if cfg.push_image and "/" not in cfg.image:
        raise invalid(
            "image",
            "a registry path such as registry.example.com/you/trainstack-trainer when "
            "pushImage is true (or pushImage false for minikube)",
            cfg.image,
        )
    return cfg


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


def load() -> tuple[StackConfig, pulumi.Output[str] | None]:
    """Read and validate the stack config once; returns it and the optional MinIO password."""
    from pulumi.runtime import config as runtime_config

    settings = parse_config(raw_stack_config())
    # Check the plaintext now (fail before any resource is registered), then use it only
    # as a secret Output so it is encrypted in the state and masked in logs.
    plain = runtime_config.get_config(f"{NAMESPACE}:minioRootPassword")
    if plain is not None:
        _check_password(plain)
    return settings, pulumi.Config(NAMESPACE).get_secret("minioRootPassword")


def _check_password(value: str) -> str:
    # MinIO refuses to start with a root password under 8 characters; fail at `pulumi up`
    # instead, and never echo the value.
    if len(value) < 8 or value == "minioadmin":
        raise invalid(
            "minioRootPassword", "at least 8 characters, not the well-known default",
            value, secret=True,
        )
    return value
