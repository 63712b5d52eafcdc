"""StackConfig: defaults, string values as `pulumi config set` stores them, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from infra.config import CIFAR10_URL, ConfigError, StackConfig, parse_config
from tests.infra.infra_helpers import IMAGE, PUSHED
from tests.infra.render import render

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_defaults_match_the_design_contract():
    assert (StackConfig().image, StackConfig().push_image) == ("trainstack-trainer", True)
    cfg = parse_config(PUSHED)  # a pushed image needs a registry path (see below)
    assert cfg == StackConfig(image=IMAGE)
    assert (cfg.workers, cfg.gpus_per_worker, cfg.cpu_per_worker, cfg.memory_per_worker) == (
        2, 0, "1", "2Gi")
    assert (cfg.epochs, cfg.batch_size, cfg.learning_rate) == (10, 128, 0.1)
    assert (cfg.model, cfg.dataset, cfg.namespace) == ("resnet18", "cifar10", "trainstack")
    assert cfg.ingest_source == CIFAR10_URL
    assert cfg.push_image and cfg.install_training_operator
    assert cfg.training_operator_version == "v1.8.1"
    assert (cfg.minio_storage_size, cfg.inference_replicas, cfg.inference_service_type) == (
        "10Gi", 1, "NodePort")
    assert cfg.node_selector == {} and cfg.tolerations == []


def test_string_values_are_converted():
    cfg = parse_config({
        "workers": "3", "gpusPerWorker": "2", "epochs": "5", "batchSize": "64",
        "learningRate": "0.05", "pushImage": "false", "installTrainingOperator": "False",
        "cpuPerWorker": "500m", "memoryPerWorker": "1.5Gi", "inferenceReplicas": "2",
        "nodeSelector": '{"pool": "gpu"}',
        "tolerations": '[{"key": "dedicated", "operator": "Equal", "value": "ml", '
                       '"effect": "NoSchedule"}]',
    })
    assert (cfg.workers, cfg.gpus_per_worker, cfg.epochs, cfg.batch_size) == (3, 2, 5, 64)
    assert cfg.learning_rate == 0.05
    assert cfg.push_image is False and cfg.install_training_operator is False
    assert cfg.node_selector == {"pool": "gpu"}
    assert cfg.tolerations[0]["value"] == "ml"


INVALID = [
    ("workers", "0", "an integer >= 1"),
    ("workers", "three", "an integer >= 1"),
    ("workers", "2.5", "an integer >= 1"),
    ("gpusPerWorker", "-1", "an integer >= 0"),
    ("epochs", "0", "an integer >= 1"),
    ("batchSize", "-8", "an integer >= 1"),
    ("learningRate", "fast", "a number > 0"),
    ("learningRate", "0", "a number > 0"),
    ("model", "vgg16", "resnet18, resnet18-imagenet, smallcnn"),
    ("dataset", "mnist", "cifar10, imagefolder, digits (synthetic is for benchmarks only"),
    ("cpuPerWorker", "two", "a CPU quantity"),
    ("cpuPerWorker", "0", "a CPU quantity"),
    ("memoryPerWorker", "2GB", "a memory quantity"),
    ("memoryPerWorker", "lots", "a memory quantity"),
    ("minioStorageSize", "10 Gi", "a size such as 10Gi"),
    ("datasetSource", "ftp://example.com/x.tar.gz", "an http(s) URL"),
    ("datasetSource", "not a url", "an http(s) URL"),
    ("namespace", "Bad_Namespace", "a DNS-1123 label"),
    ("image", "registry.example.com/trainer:v1", "without tag"),
    ("pushImage", "yes", "true or false"),
    ("installTrainingOperator", "1", "true or false"),
    ("trainingOperatorVersion", "1.8", "a release tag such as v1.8.1"),
    ("inferenceReplicas", "0", "an integer >= 1"),
    ("inferenceServiceType", "Ingress", "ClusterIP, NodePort, LoadBalancer"),
    ("nodeSelector", "[1, 2]", "a JSON object"),
    ("nodeSelector", "{not json", "a JSON object"),
    ("tolerations", '[{"effect": "Sometimes"}]', "a JSON list of tolerations"),
    ("worker", "3", "one of workers, gpusPerWorker"),  # typo of a known key
    ("dataset", "synthetic", "cifar10, imagefolder, digits (synthetic is for benchmarks only"),
    # pushImage defaults to true: a bare name would go to docker.io/library and fail late.
    ("image", "trainstack-trainer", "a registry path such as registry.example.com/you/"),
]


@pytest.mark.parametrize(("key", "value", "allowed"), INVALID)
def test_invalid_values_name_the_key_and_what_is_allowed(key, value, allowed):
    with pytest.raises(ConfigError) as err:
        parse_config({key: value})
    message = str(err.value)
    assert f"trainstack:{key}" in message and allowed in message and repr(value) in message


@pytest.mark.parametrize(("key", "value", "allowed"), [INVALID[1], INVALID[8], INVALID[13]])
def test_invalid_values_stop_the_program(key, value, allowed):
    """The real program path: config read from the engine's config map, under mocks."""
    with pytest.raises(ConfigError, match=f"trainstack:{key}.*{allowed}"):
        render({key: value})


def test_short_minio_password_fails_without_echoing_it():
    for bad in ("short", "minioadmin"):
        with pytest.raises(ConfigError, match="trainstack:minioRootPassword.*8 characters") as err:
            render({**PUSHED, "minioRootPassword": bad})
        assert bad not in str(err.value)


def test_image_needs_a_registry_path_only_when_pushed():
    assert parse_config({"pushImage": "false"}).image == "trainstack-trainer"  # minikube
    for image in ("you/trainstack-trainer", "registry.example.com:5000/trainstack-trainer"):
        assert parse_config({"image": image}).image == image
    with pytest.raises(ConfigError, match="pushImage false for minikube"):
        parse_config({"pushImage": "true", "image": "trainer"})


def test_stack_datasets_are_the_trainers_without_benchmark_ones():
    from infra import config as infra_config
    from trainer import config as trainer_config

    assert infra_config.MODELS == trainer_config.MODELS
    assert set(infra_config.DATASETS) == set(trainer_config.DATASETS) - {"synthetic"}
    assert {"cifar10", "imagefolder", "digits"} <= set(infra_config.DATASETS)


def test_dev_stack_file_is_valid():
    stack = yaml.safe_load((REPO_ROOT / "Pulumi.dev.yaml").read_text())["config"]
    ours = {k.split(":", 1)[1]: v for k, v in stack.items() if k.startswith("trainstack:")}
    cfg = parse_config(ours)
    assert cfg.workers == 2 and cfg.gpus_per_worker == 0 and cfg.push_image is False
    assert stack["kubernetes:context"] == "minikube"
    # Its bare image name is fine unpushed: the whole stack renders, nothing is pulled.
    app = render(ours).objects["Deployment/inference"]["spec"]["template"]["spec"]
    assert app["containers"][0]["imagePullPolicy"] == "Never"


def test_project_file():
    project = yaml.safe_load((REPO_ROOT / "Pulumi.yaml").read_text())
    assert project["name"] == "trainstack" and project["main"] == "infra/"
    assert project["runtime"] == {"name": "python", "options": {"toolchain": "pip",
                                                               "virtualenv": ".venv"}}
