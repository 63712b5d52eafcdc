"""StackConfig: defaults, string values as `pulumi config set` stores them, clear errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from infra.config.keys import ConfigError, StackConfig, parse_config
from tests.infra.infra_helpers import (
    EXTERNAL,
    EXTERNAL_KEYS,
    IMAGE,
    PASSWORD,
    PREBUILT,
    PUSHED,
    RENDERED,
    S3_SECRET_KEY,
)
from tests.infra.render import render
from trainer.contract.config import CIFAR10_URL, TrainConfig

REPO_ROOT = Path(__file__).resolve().parents[3]
AUTH_TOKEN = "cfg-app-token-0123456789abcdef01234"  # as `pulumi config set --secret`


def test_defaults_match_the_design_contract():
    # Every default at once is refused: it would push `trainstack-trainer` to Docker Hub.
    with pytest.raises(ConfigError, match="trainstack:image"):
        StackConfig()
    assert StackConfig(push_image=False).image_repository == "trainstack-trainer"
    cfg = parse_config(PUSHED)  # a pushed image needs a registry path (see below)
    assert cfg == StackConfig(image=IMAGE)
    assert cfg.build_image and cfg.pushes and cfg.image_repository == IMAGE
    assert cfg.store_endpoint is None and cfg.store_region is None  # the in-cluster MinIO
    assert cfg.store_credentials_secret is None and cfg.store_access_key is None
    assert cfg.bucket_prefix == "" and cfg.buckets == ["datasets", "models", "metrics", "mlflow"]
    assert cfg.render_yaml_to is None
    assert (cfg.buckets_timeout, cfg.ingest_timeout, cfg.ingest_storage) == ("15m", "30m", "4Gi")
    assert (cfg.workers, cfg.gpus_per_worker, cfg.cpu_per_worker, cfg.memory_per_worker) == (
        2, 0, "1", "3Gi")
    assert (cfg.epochs, cfg.batch_size, cfg.learning_rate) == (10, 128, 0.1)
    assert (cfg.model, cfg.dataset, cfg.namespace) == ("resnet18", "cifar10", "trainstack")
    assert cfg.ingest_source == CIFAR10_URL
    assert cfg.pushes and cfg.install_training_operator
    assert cfg.training_operator_version == "v1.8.1"
    assert (cfg.minio_volume_size, cfg.inference_replicas, cfg.inference_service_type) == (
        "10Gi", 1, "NodePort")
    assert cfg.node_selector == {} and cfg.tolerations == []
    assert cfg.network_policy == "ingress"  # default-deny ingress, then the flows
    assert cfg.inference_ingress_namespace is None and cfg.inference_auth_secret is None
    assert cfg.mlflow and cfg.mlflow_image is None and cfg.mlflow_storage_class is None


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


RESERVED = "not default, kube-system, kube-public, kube-node-lease, kubeflow or kubeflow-system"
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
    ("trainingOperatorVersion", "1.8", "v1 line from v1.3.0 on"),
    ("trainingOperatorVersion", "v2.0.0", "v1 line from v1.3.0 on"),
    ("trainingOperatorVersion", "v1.2.1", "v1 line from v1.3.0 on"),  # no PyTorchJob yet
    ("trainingOperatorVersion", "v1.8.1-rc.0", "v1 line from v1.3.0 on"),
    ("trainingOperatorVersion", "master", "v1 line from v1.3.0 on"),
    ("buildImage", "no", "true or false"),
    ("image", "Registry.example.com/UPPER/case", "an image reference"),
    ("image", "reg.example.com/ml/trainer@sha256:abc", "an image reference"),
    ("storeEndpoint", "s3://s3.amazonaws.com", "https://HOST[:PORT] or http://HOST:PORT"),
    ("storeEndpoint", "ftp://store:21", "https://HOST[:PORT] or http://HOST:PORT"),
    ("storeEndpoint", "http://minio.example.com", "https://HOST[:PORT] or http://HOST:PORT"),
    ("storeEndpoint", "https://s3.amazonaws.com/bucket", "no path"),
    ("storeEndpoint", "https://key:secret@s3.amazonaws.com", "credentials in the URL"),
    ("storeEndpoint", "https://s3.amazonaws.com:99999", "https://HOST[:PORT]"),
    ("storeEndpoint", "https://-bad-host", "https://HOST[:PORT]"),
    ("storeRegion", "eu west 1", "a region name"),
    ("storeCredentialsSecret", "Team_S3", "a Secret name"),
    ("storeAccessKey", "has space", "an access key id"),
    ("bucketPrefix", "Acme-", "'Acme-datasets'"),
    ("bucketPrefix", "-acme", "start and end with a letter or digit"),
    ("bucketPrefix", "acme..", "'..'"),
    ("bucketPrefix", "acme_", "a character other than"),
    ("bucketPrefix", "a" * 56, "64 characters"),
    ("bucketPrefix", "xn--acme-", "reserves"),
    ("renderYamlTo", "/", "a directory for the rendered YAML"),
    ("ingestTimeout", "30", "a duration > 0"),
    ("ingestTimeout", "0m", "a duration > 0"),
    ("bucketsTimeout", "1d", "a duration > 0"),
    ("ingestStorage", "lots", "a size such as 4Gi"),
    ("dataCacheSize", "0Gi", "a size such as 4Gi, at least a few of the dataset's shards"),
    ("checkpointEverySteps", "-1", "an integer >= 0"),
    ("inferenceReplicas", "0", "an integer >= 1"),
    ("inferenceServiceType", "Ingress", "ClusterIP, NodePort, LoadBalancer"),
    ("networkPolicy", "strict", "ingress-egress (egress fenced too), none (no NetworkPolicy)"),
    ("inferenceIngressNamespace", "Ingress_NGINX", "a namespace name (DNS-1123 label)"),
    ("inferenceAuthSecret", "App Token", "a Secret name (DNS-1123)"),
    ("nodeSelector", "[1, 2]", "a JSON object"),
    ("nodeSelector", "{not json", "a JSON object"),
    ("tolerations", '[{"effect": "Sometimes"}]', "a JSON list of tolerations"),
    ("worker", "3", "one of workers, gpusPerWorker"),  # typo of a known key
    ("dataset", "synthetic", "cifar10, imagefolder, digits (synthetic is for benchmarks only"),
    # pushImage defaults to true: a bare name would go to docker.io/library and fail late.
    ("image", "trainstack-trainer", "a registry path such as registry.example.com/you/"),
    # The stack owns its namespace: default-deny there would cut off whatever else runs in
    # it (kube-system: the cluster's DNS; kubeflow: the operator's webhook), and destroy
    # would delete it.
    ("namespace", "default", RESERVED),
    ("namespace", "kube-system", RESERVED),
    ("namespace", "kubeflow", RESERVED),
    # Retraining: a CronJob's schedule as the API server parses it, a tolerance >= 0.
    ("retrainSchedule", "61 * * * *", "got the minute field '61' (allowed: 0-59)"),
    ("retrainSchedule", "* * * *", "got 4 fields, not 5"),
    ("retrainSchedule", "0 3 * * 7", "got the day of week field '7' (allowed: 0-6)"),
    ("retrainSchedule", "@every 1h", "got an unknown descriptor"),
    ("retrainSchedule", "CRON_TZ=UTC 0 3 * * *", "got TZ= or CRON_TZ= in a schedule"),
    ("retrainSchedule", "*/0 * * * *", "a cron schedule of 5 fields"),
    ("promotionTolerance", "-1", "a number of percentage points from 0 to 100"),
    ("promotionGate", "maybe", "true or false"),
    ("retrainOnDrift", "yes", "true or false"),
    ("retrainCooldown", "0h", "a duration > 0 in m, h or d"),
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


@pytest.mark.parametrize(("config", "key"), [
    ({**PUSHED, "minioRootPassword": PASSWORD}, "minioRootPassword"),
    (EXTERNAL_KEYS, "storeSecretKey"),
])
def test_a_secret_key_set_without_secret_is_refused_unechoed(config, key):
    """`pulumi config set storeSecretKey x` (no --secret) stores it in plain text."""
    with pytest.raises(ConfigError, match=f"trainstack:{key}.*pulumi config set --secret") as err:
        render(config, secrets=())
    assert config[key] not in str(err.value) and "not shown" in str(err.value)
    assert render(config).objects  # the same value as a secret is fine


# Combinations: (config, the key named, what the message says is allowed).
COMBINATIONS = [
    # buildImage false
    ({"buildImage": "false"}, "image", "a prebuilt image reference"),
    ({**PREBUILT, "image": "trainstack-trainer@" + "sha256:" + "0" * 64}, "image",
     "names its registry host"),
    ({**PREBUILT, "image": "team/trainstack:v1"}, "image", "names its registry host"),
    ({**PREBUILT, "image": "reg.example.com/ml/trainstack"}, "image", "a digest"),
    ({**PREBUILT, "pushImage": "false"}, "pushImage", "unset when buildImage is false"),
    # buildImage true
    ({"image": "registry.example.com/trainer:v1"}, "image", "without tag or digest"),
    # storeEndpoint
    ({**EXTERNAL, "minioStorageSize": "20Gi"}, "minioStorageSize", "unset when storeEndpoint"),
    ({**EXTERNAL, "minioStorageClass": "gp3"}, "minioStorageClass", "unset when storeEndpoint"),
    ({**EXTERNAL, "minioRootPassword": PASSWORD}, "minioRootPassword",
     "unset when storeEndpoint"),
    ({**EXTERNAL, "storeAccessKey": "AKIA", "storeSecretKey": S3_SECRET_KEY},
     "storeCredentialsSecret", "not both (credentials given twice)"),
    ({**EXTERNAL_KEYS, "storeCredentialsSecret": "team-s3"}, "storeCredentialsSecret",
     "credentials given twice"),
    ({**{k: v for k, v in EXTERNAL_KEYS.items() if k != "storeSecretKey"}}, "storeSecretKey",
     "set together with storeAccessKey"),
    ({**{k: v for k, v in EXTERNAL_KEYS.items() if k != "storeAccessKey"}}, "storeAccessKey",
     "set together with storeSecretKey"),
    ({**PUSHED, "storeEndpoint": "https://s3.amazonaws.com"}, "storeCredentialsSecret",
     "storeEndpoint needs credentials"),
    # no storeEndpoint
    ({**PUSHED, "storeRegion": "eu-west-1"}, "storeRegion", "unset without storeEndpoint"),
    ({**PUSHED, "storeAccessKey": "AKIA"}, "storeAccessKey", "unset without storeEndpoint"),
    ({**PUSHED, "storeSecretKey": S3_SECRET_KEY}, "storeSecretKey",
     "unset without storeEndpoint"),
    ({**PUSHED, "storeCredentialsSecret": "m", "minioRootPassword": PASSWORD},
     "minioRootPassword", "credentials given twice"),
    # renderYamlTo
    ({**RENDERED, "installTrainingOperator": "true"}, "installTrainingOperator",
     "false when renderYamlTo is set"),
    ({k: v for k, v in RENDERED.items() if k != "storeCredentialsSecret"},
     "storeCredentialsSecret", "written there in plain text"),
    ({**{k: v for k, v in RENDERED.items() if k != "storeCredentialsSecret"},
      "minioRootPassword": PASSWORD}, "minioRootPassword", "written there in plain text"),
    ({**{k: v for k, v in EXTERNAL_KEYS.items()}, "renderYamlTo": "out",
      "installTrainingOperator": "false"}, "storeSecretKey", "written there in plain text"),
    ({**PUSHED, "pushImage": "false", "renderYamlTo": "out", "installTrainingOperator": "false",
      "storeCredentialsSecret": "m"}, "pushImage", "true when renderYamlTo is set"),
    # the app's access
    ({**RENDERED, "inferenceAuthToken": AUTH_TOKEN}, "inferenceAuthToken",
     "create the Secret yourself (key TRAINSTACK_AUTH_TOKEN) and set inferenceAuthSecret"),
    ({**PUSHED, "inferenceAuthToken": AUTH_TOKEN, "inferenceAuthSecret": "app-token"},
     "inferenceAuthSecret", "not both (the token given twice)"),
    ({**PUSHED, "inferenceIngressNamespace": "ingress-nginx"}, "inferenceServiceType",
     "ClusterIP when inferenceIngressNamespace is set"),
    ({**PUSHED, "inferenceIngressNamespace": "ingress-nginx", "inferenceServiceType": "ClusterIP",
      "networkPolicy": "none"}, "inferenceIngressNamespace", "unset when networkPolicy is none"),
    # retraining
    ({**PUSHED, "retrainOnDrift": "true"}, "retrainOnDrift", "false while monitoring is none"),
    ({**PUSHED, "promotionGate": "false", "promotionTolerance": "2"}, "promotionTolerance",
     "unset when promotionGate is false"),
    ({**PUSHED, "retrainCooldown": "6h"}, "retrainCooldown",
     "unset unless retrainOnDrift is true"),
]


@pytest.mark.parametrize(("config", "key", "allowed"), COMBINATIONS)
def test_bad_combinations_stop_the_program_naming_key_and_allowed(config, key, allowed):
    with pytest.raises(ConfigError, match=f"trainstack:{key} .*allowed: .*{re.escape(allowed)}"
                       ) as err:
        render(config)
    assert err.value.key == key
    for secret in (PASSWORD, S3_SECRET_KEY, AUTH_TOKEN):
        assert secret not in str(err.value)


def test_good_combinations_are_accepted():
    assert parse_config(EXTERNAL).store_credentials_secret == "team-s3"
    keys = parse_config({k: v for k, v in EXTERNAL_KEYS.items() if k != "storeSecretKey"},
                        secrets=frozenset({"storeSecretKey"}))
    assert keys.store_access_key == "AKIAEXAMPLE"
    assert parse_config({**PUSHED, "bucketPrefix": "acme-ml-"}).buckets == [
        "acme-ml-datasets", "acme-ml-models", "acme-ml-metrics", "acme-ml-mlflow"]
    assert parse_config({**PUSHED, "mlflow": "false"}).buckets == [
        "datasets", "models", "metrics"]
    minio_secret = parse_config({**PUSHED, "storeCredentialsSecret": "minio-sealed"})
    assert minio_secret.store_endpoint is None  # the in-cluster MinIO reads that Secret
    assert parse_config(RENDERED).render_yaml_to == "rendered"
    by_tag = parse_config({**PREBUILT, "image": "ghcr.io/acme/trainstack:2026.11.1"})
    assert not by_tag.build_image and by_tag.image.endswith(":2026.11.1")
    local_registry = parse_config({**PREBUILT, "image": "localhost:5000/trainstack:dev"})
    assert local_registry.image.startswith("localhost:5000/")
    assert parse_config({**PUSHED, "trainingOperatorVersion": "v1.9.0"})


def test_storage_class_names_are_dns_subdomains():
    """A StorageClass's name is a DNS-1123 subdomain: dots are allowed (`ceph.rbd.fast`)."""
    rendering = render({**PUSHED, "minioStorageClass": "ceph.rbd.fast",
                        "mlflowStorageClass": "nfs.example.com"})
    claims = {key: obj["spec"]["storageClassName"] for key, obj in rendering.objects.items()
              if obj["kind"] == "PersistentVolumeClaim"}
    assert claims == {"PersistentVolumeClaim/minio-data": "ceph.rbd.fast",
                      "PersistentVolumeClaim/mlflow-data": "nfs.example.com"}
    for key in ("minioStorageClass", "mlflowStorageClass"):
        with pytest.raises(ConfigError, match=rf"trainstack:{key} .*DNS-1123 subdomain"):
            parse_config({**PUSHED, key: "Fast_SSD"})


def test_image_needs_a_registry_path_only_when_pushed():
    assert parse_config({"pushImage": "false"}).image_repository == "trainstack-trainer"
    for image in ("you/trainstack-trainer", "registry.example.com:5000/trainstack-trainer"):
        assert parse_config({"image": image}).image == image
    with pytest.raises(ConfigError, match="pushImage false for minikube"):
        parse_config({"pushImage": "true", "image": "trainer"})


def test_stack_datasets_are_the_trainers_without_benchmark_ones():
    from infra.config import stack_config as infra_config
    from trainer.contract import config as trainer_config

    assert infra_config.MODELS == trainer_config.MODELS
    assert set(infra_config.DATASETS) == set(trainer_config.DATASETS) - {"synthetic"}
    assert {"cifar10", "imagefolder", "digits"} <= set(infra_config.DATASETS)


def test_dev_stack_file_is_valid():
    stack = yaml.safe_load((REPO_ROOT / "Pulumi.dev.yaml").read_text())["config"]
    ours = {k.split(":", 1)[1]: v for k, v in stack.items() if k.startswith("trainstack:")}
    cfg = parse_config(ours)
    assert cfg.workers == 2 and cfg.gpus_per_worker == 0 and cfg.push_image is False
    assert stack["kubernetes:context"] == "minikube"
    # The best accuracy per minute on CPU, with the settings it was tuned with (2 workers
    # of 32 images a step), and a train.json the trainer accepts as it is.
    train = TrainConfig.from_dict(cfg.train_json())
    assert (train.model, train.epochs, train.batch_size, train.lr) == ("fastcifar", 8, 32, 0.2)
    # Its bare image name is fine unpushed: the whole stack renders, nothing is pulled.
    app = render(ours).objects["Deployment/inference"]["spec"]["template"]["spec"]
    assert app["containers"][0]["imagePullPolicy"] == "Never"


def test_project_file():
    project = yaml.safe_load((REPO_ROOT / "Pulumi.yaml").read_text())
    # No `main`: the program directory is the project root (see tests/infra/test_infra_venv.py).
    assert project["name"] == "trainstack" and "main" not in project
    assert project["runtime"] == {"name": "python", "options": {"toolchain": "pip",
                                                               "virtualenv": ".venv"}}
