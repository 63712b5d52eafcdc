"""An external S3 store (`storeEndpoint`): no MinIO objects, every workload reaches the
endpoint (TLS for https) with region, bucket prefix and credentials only by reference."""

from __future__ import annotations

import json

import pytest

from tests.infra.infra_helpers import (
    EXTERNAL,
    EXTERNAL_KEYS,
    PUSHED,
    S3_SECRET_KEY,
    env_of,
    minio_credentials,
    secret_ref,
    versioned,
    workload_specs,
)
from tests.infra.render import render

MINIO_TYPES = ("kubernetes:core/v1:PersistentVolumeClaim", "kubernetes:apps/v1:Deployment",
               "kubernetes:core/v1:Service", "kubernetes:core/v1:Secret",
               "random:index/randomPassword:RandomPassword")


@pytest.fixture(scope="module")
def external():
    return render(EXTERNAL)


@pytest.fixture(scope="module")
def external_keys():
    return render(EXTERNAL_KEYS)


MLFLOW_OBJECTS = ("ServiceAccount/mlflow", "PersistentVolumeClaim/mlflow-data",
                  "ConfigMap/mlflow-tracking", "Deployment/mlflow", "Service/mlflow",
                  "NetworkPolicy/mlflow")  # its own volume, whatever the store


def test_no_minio_object_is_declared(external):
    mlflow = {*MLFLOW_OBJECTS, f"ConfigMap/{versioned(external, 'ConfigMap', 'mlflow-aws-config')}"}
    assert mlflow <= set(external.objects)
    objects = {k: o for k, o in external.objects.items() if k not in mlflow
               and o["metadata"].get("namespace") != "kubeflow"}  # the operator's own
    assert not [k for k in objects if "minio" in k.lower()]
    assert not external.by_type("trainstack:index:MinIO")
    assert not external.by_type("random:index/randomPassword:RandomPassword")
    assert not [k for k in objects if k.split("/")[0] in ("Secret", "PersistentVolumeClaim")]
    kinds = sorted(k.split("/")[0] for k in objects if not k.startswith(
        ("NetworkPolicy/", "ServiceAccount/")))
    assert kinds == ["ConfigMap", "Deployment", "Job", "Job", "Namespace", "PyTorchJob",
                     "Role", "RoleBinding", "Service"]  # the app's Deployment and Service,
    # bucket and ingest Jobs, what lets rank 0 annotate its job
    accounts = sorted(k for k in objects if k.startswith("ServiceAccount/"))
    assert accounts == ["ServiceAccount/inference", "ServiceAccount/trainer",
                        "ServiceAccount/trainstack-buckets", "ServiceAccount/trainstack-ingest"]


def test_every_workload_reaches_the_endpoint_over_tls_with_region_and_prefix(external):
    specs = workload_specs(external)
    assert len(specs) == 5  # bucket Job, ingest Job, Master, Worker, app
    for key, spec in specs.items():
        env = env_of(spec["containers"][0])
        assert env["TRAINSTACK_STORE"] == "s3s://s3.eu-west-1.amazonaws.com", key  # https: TLS
        assert env["AWS_REGION"] == "eu-west-1", key
        assert env["TRAINSTACK_BUCKET_PREFIX"] == "acme-ml-", key
        assert env["AWS_ACCESS_KEY_ID"] == secret_ref("team-s3", "AWS_ACCESS_KEY_ID"), key
        assert env["AWS_SECRET_ACCESS_KEY"] == secret_ref("team-s3", "AWS_SECRET_ACCESS_KEY"), key
    assert external.exports["store"] == "s3s://s3.eu-west-1.amazonaws.com"
    assert external.exports["buckets"] == ["acme-ml-datasets", "acme-ml-models",
                                           "acme-ml-metrics", "acme-ml-mlflow"]
    assert "minioEndpoint" not in external.exports


def test_the_bucket_job_runs_first_and_nothing_waits_for_minio(external):
    buckets = external.urn_of("Job", "trainstack-buckets")
    for kind, name in (("Job", "trainstack-ingest-cifar10"), ("Deployment", "inference")):
        assert buckets in external.registration(kind, name).dependencies, name
    job = next(k.split("/")[1] for k in external.objects if k.startswith("PyTorchJob/"))
    assert buckets in external.registration("PyTorchJob", job).dependencies


@pytest.mark.parametrize(("endpoint", "url"), [
    ("https://storage.googleapis.com", "s3s://storage.googleapis.com"),
    ("https://ceph.example.com:8443", "s3s://ceph.example.com:8443"),
    ("https://minio.example.com:443/", "s3s://minio.example.com:443"),
    ("http://10.0.0.5:9000", "s3://10.0.0.5:9000"),
])
def test_endpoint_schemes_map_to_store_urls(endpoint, url):
    rendering = render({**EXTERNAL, "storeEndpoint": endpoint})
    for spec in workload_specs(rendering).values():
        assert env_of(spec["containers"][0])["TRAINSTACK_STORE"] == url


def test_the_stack_makes_the_secret_from_keys_and_never_shows_the_secret_key(external_keys):
    # Twins (infra/workloads/rotation.py): named by their content for the pods that keep
    # running, under a fixed name for the Jobs (a new key does not run them again).
    rolled = versioned(external_keys, "Secret", "trainstack-store-credentials")
    secrets = {k: o for k, o in external_keys.objects.items() if k.startswith("Secret/")}
    assert sorted(secrets) == sorted(["Secret/trainstack-store-credentials", f"Secret/{rolled}"])
    for secret_obj in secrets.values():
        assert secret_obj["stringData"] == {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
                                            "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY}
    for registration in external_keys.by_type("kubernetes:core/v1:Secret"):
        assert registration.secret_props == ["stringData"]  # encrypted in the state
    for key, spec in workload_specs(external_keys).items():
        env = env_of(spec["containers"][0])
        name = "trainstack-store-credentials" if key.startswith("Job/") else rolled
        assert env["TRAINSTACK_STORE"] == "s3://ceph.storage.svc:7480", key  # http: plain
        assert env["AWS_SECRET_ACCESS_KEY"] == secret_ref(name, "AWS_SECRET_ACCESS_KEY"), key
        assert "AWS_REGION" not in env and "TRAINSTACK_BUCKET_PREFIX" not in env, key
        # Created after the Secret it reads (a pod would not start before it exists).
        workload = external_keys.urn_of(*key.split("/")[:2])
        assert external_keys.urn_of("Secret", name) in _created_before(external_keys,
                                                                       workload), key
    for registration in external_keys.resources.values():
        if registration.inputs.get("kind") != "Secret":
            assert S3_SECRET_KEY not in json.dumps(registration.inputs), registration.urn
    assert S3_SECRET_KEY not in json.dumps(external_keys.exports)


def _created_before(rendering, urn: str) -> set[str]:
    """Every resource `pulumi up` has created before `urn` (its dependencies, transitively)."""
    seen: set[str] = set()
    todo = [urn]
    while todo:
        for dep in rendering.dependencies_of(rendering.resources[todo.pop()]) - seen:
            seen.add(dep)
            todo.append(dep)
    return seen


def test_no_credentials_value_anywhere_with_the_users_secret(external):
    """Only a name reaches the objects: the value lives in the Secret the user made."""
    text = json.dumps(external.objects)
    assert "team-s3" in text and "stringData" not in text
    assert not [k for k in external.objects if k.startswith("Secret/")]
    for spec in workload_specs(external).values():
        for env in spec["containers"][0]["env"]:
            if env["name"].startswith("AWS_") and env["name"] != "AWS_REGION":
                assert "value" not in env and set(env["valueFrom"]) == {"secretKeyRef"}


def test_bucket_prefix_with_the_in_cluster_minio():
    rendering = render({**PUSHED, "bucketPrefix": "team-a-"})
    for key, spec in workload_specs(rendering).items():
        env = env_of(spec["containers"][0])
        assert env["TRAINSTACK_BUCKET_PREFIX"] == "team-a-", key
        assert env["TRAINSTACK_STORE"] == "s3://minio.trainstack.svc:9000", key
    assert rendering.exports["buckets"] == ["team-a-datasets", "team-a-models",
                                            "team-a-metrics", "team-a-mlflow"]


def test_minio_can_read_its_credentials_from_the_users_secret():
    rendering = render({**PUSHED, "storeCredentialsSecret": "minio-sealed"})
    assert not [k for k in rendering.objects if k.startswith("Secret/")]
    assert not rendering.by_type("random:index/randomPassword:RandomPassword")
    assert minio_credentials(rendering) == {
        "MINIO_ROOT_USER": ("minio-sealed", "AWS_ACCESS_KEY_ID"),
        "MINIO_ROOT_PASSWORD": ("minio-sealed", "AWS_SECRET_ACCESS_KEY")}
    for spec in workload_specs(rendering).values():
        env = env_of(spec["containers"][0])
        assert env["AWS_ACCESS_KEY_ID"] == secret_ref("minio-sealed", "AWS_ACCESS_KEY_ID")
