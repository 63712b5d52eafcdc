"""Rotating a secret the stack manages rolls exactly the pods that read it at start, as
`pulumi up` does it (tests/infra/plan.py: the engine's and pulumi-kubernetes' rules, which
the mocks do not apply): Deployments are updated (a rolling update), never deleted; the
training job is replaced and resumes; the bucket and ingest Jobs stay as they are.

The rule it rests on (infra/workloads/rotation.py): nothing that keeps running takes a
property from a Secret or ConfigMap under a fixed name. pulumi-kubernetes replaces a Secret
whose data changes; one that keeps its name is deleted first, and the engine first
deletes everything that takes a property from it. So what Deployments read is named by a
digest of its content (a new value: a new Secret, created first), and a fixed-name Secret
is read by name only (the Jobs, the training pods' optional MLflow login).
"""

from __future__ import annotations

import hashlib
import json

import pytest

from infra.workloads import rotation
from infra.workloads import trainjob as tj
from tests.infra.infra_helpers import (
    EXTERNAL_KEYS,
    PASSWORD,
    PUSHED,
    S3_SECRET_KEY,
    one,
    versioned,
)
from tests.infra.plan import kind_of, up_plan
from tests.infra.render import MOCK_RANDOM_PASSWORD, Rendering, render

TOKEN = "0123456789abcdef0123456789abcdef"
TRAINJOB = {**PUSHED, "trainingApi": "trainjob"}
LOGIN = {**PUSHED, "mlflowAccess": "login"}
UPDATE, REPLACE, DELETE_FIRST = "update", "replace", "replace-delete-first"
# The store's clients that keep running: rolled. The training job: replaced (a new name).
CLIENTS = {"Deployment/inference": UPDATE, "Deployment/mlflow": UPDATE}
# The Role that lets rank 0 annotate the job names it: it follows the new name.
PYTORCHJOB = {"PyTorchJob/pytorchjob": DELETE_FIRST, "Role/job-progress-role": UPDATE}
TRAIN_JOB = {"TrainJob/trainjob": DELETE_FIRST}


def store_secrets(name: str) -> dict[str, str]:
    """The versioned Secret: created first, then the fixed-name one (no reader deleted)."""
    return {f"Secret/{name}{rotation.VERSIONED_SUFFIX}": REPLACE, f"Secret/{name}": DELETE_FIRST}


MINIO = {**store_secrets("minio-credentials"), "Deployment/minio": UPDATE, **CLIENTS}
EXTERNAL_STORE = {**store_secrets("trainstack-store-credentials"), **CLIENTS}
# (name, config before, config after, generated passwords `pulumi up --replace`d, the plan)
ROTATIONS = [
    ("minioRootPassword", {**PUSHED, "minioRootPassword": PASSWORD},
     {**PUSHED, "minioRootPassword": PASSWORD + "-new"}, (), {**MINIO, **PYTORCHJOB}),
    ("generated MinIO password", PUSHED, PUSHED, ("minio-root-password",),
     {**MINIO, **PYTORCHJOB, "RandomPassword/minio-root-password": REPLACE}),
    ("storeSecretKey", EXTERNAL_KEYS, {**EXTERNAL_KEYS, "storeSecretKey": S3_SECRET_KEY + "x"},
     (), {**EXTERNAL_STORE, **PYTORCHJOB}),
    ("storeAccessKey", EXTERNAL_KEYS, {**EXTERNAL_KEYS, "storeAccessKey": "AKIANEWKEY"}, (),
     {**EXTERNAL_STORE, **PYTORCHJOB}),
    # The TrainJob as the PyTorchJob; its runtime holds nothing of the credentials.
    ("minioRootPassword, trainjob", {**TRAINJOB, "minioRootPassword": PASSWORD},
     {**TRAINJOB, "minioRootPassword": PASSWORD + "-new"}, (), {**MINIO, **TRAIN_JOB}),
    ("storeSecretKey, trainjob", {**EXTERNAL_KEYS, "trainingApi": "trainjob"},
     {**EXTERNAL_KEYS, "trainingApi": "trainjob", "storeSecretKey": S3_SECRET_KEY + "x"}, (),
     {**EXTERNAL_STORE, **TRAIN_JOB}),
    ("inferenceAuthToken", {**PUSHED, "inferenceAuthToken": TOKEN},
     {**PUSHED, "inferenceAuthToken": TOKEN[::-1]}, (),
     {"Secret/inference-auth": REPLACE, "Deployment/inference": UPDATE}),
    # The trainer's tracking never stops training: its pods read the fixed-name
    # mlflow-client at their next start (docs/security.md, "Rotating secrets").
    ("MLflow login", LOGIN, LOGIN, ("mlflow-admin-password",),
     {"RandomPassword/mlflow-admin-password": REPLACE, "Secret/mlflow-auth": REPLACE,
      "Secret/mlflow-client": DELETE_FIRST, "Deployment/mlflow": UPDATE}),
]


@pytest.mark.parametrize("name, before, after, rotated, expected", ROTATIONS,
                         ids=[r[0] for r in ROTATIONS])
def test_a_rotation_rolls_exactly_the_pods_that_read_the_secret(name, before, after, rotated,
                                                                 expected):
    old = render(before)
    plan = up_plan(old, render(after, rotated=rotated), replaced=rotated)
    assert plan.changes() == expected
    assert up_plan(old, render(before)).changes() == {}  # no rollout without a change


@pytest.mark.parametrize("before, after", [
    ({**TRAINJOB, "minioRootPassword": PASSWORD}, {**TRAINJOB, "minioRootPassword": "x" * 9}),
    ({**EXTERNAL_KEYS, "trainingApi": "trainjob"},
     {**EXTERNAL_KEYS, "trainingApi": "trainjob", "storeSecretKey": "rotated-secret-key"}),
], ids=["minio", "external"])
def test_a_rotation_restarts_the_trainjob_under_a_new_name(before, after):
    """Its ranks read the credentials at start: the TrainJob must change (not only the
    runtime), and under a new name: a TrainJob is deleted in the background, so its old
    JobSet may still exist when the new one is made (infra/workloads/trainjob.py)."""
    old, new = render(before), render(after)
    old_job, new_job = one(old, "TrainJob"), one(new, "TrainJob")
    assert old_job["metadata"]["name"] != new_job["metadata"]["name"]
    secret = new.objects[_store_secret_key(new)]["metadata"]["name"]
    env = {e["name"]: e for e in new_job["spec"]["trainer"]["env"]}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == secret
    runtime = f"TrainingRuntime/{tj.RUNTIME}"
    assert old.objects[runtime] == new.objects[runtime]


def _store_secret_key(rendering: Rendering) -> str:
    (key,) = [k for k, o in rendering.objects.items() if o["kind"] == "Secret"
              and o["metadata"]["name"].startswith(("minio-credentials-",
                                                    "trainstack-store-credentials-"))]
    return key


CONFIGS = [PUSHED, {**PUSHED, "minioRootPassword": PASSWORD, "inferenceAuthToken": TOKEN},
           LOGIN, {**EXTERNAL_KEYS, "inferenceAuthToken": TOKEN, "mlflowAccess": "login"},
           {**TRAINJOB, "inferenceAuthToken": TOKEN},
           {**PUSHED, "storeCredentialsSecret": "team-s3", "inferenceAuthSecret": "app-token"}]


def _expected_name(obj: dict) -> str:
    """`<name>-<digest of content>` for the name the object has."""
    base = obj["metadata"]["name"].rsplit("-", 1)[0]
    if obj["kind"] == "Secret":  # the version key is the mocks' generated password
        return rotation.versioned_name(base, rotation.digest(MOCK_RANDOM_PASSWORD,
                                                             obj["stringData"]))
    text = json.dumps(obj["data"], sort_keys=True).encode()
    return rotation.versioned_name(base, hashlib.sha256(text).hexdigest()[:16])


@pytest.mark.parametrize("config", CONFIGS)
def test_nothing_that_keeps_running_reads_a_fixed_name_secret_or_config_map(config):
    rendering = render(config)
    config_objects = {urn: r for urn, r in rendering.resources.items()
                      if kind_of(r) in ("Secret", "ConfigMap")}
    for r in rendering.resources.values():
        read = {u for deps in r.property_dependencies.values() for u in deps} & set(
            config_objects)
        if kind_of(r) in ("PyTorchJob", "TrainJob"):
            continue  # replaced whenever what it reads changes: a new run's shape
        for urn in read:
            source = config_objects[urn]
            assert source.inputs["metadata"]["name"] == _expected_name(source.inputs), (
                f"{kind_of(r)}/{r.name} takes a property from a fixed-name {source.name}")
            assert not source.delete_before_replace
    fixed = {urn for urn, r in config_objects.items() if kind_of(r) == "Secret"
             and r.inputs["metadata"]["name"] != _expected_name(r.inputs)}
    for r in rendering.resources.values():  # read by name only: replaced, it deletes none
        assert not fixed & {u for deps in r.property_dependencies.values() for u in deps}, r.name


@pytest.mark.parametrize("config", CONFIGS[1:4])
def test_the_version_reveals_nothing_and_is_not_secret(config):
    rendering = render(config)
    versioned = {key: o for key, o in rendering.objects.items()
                 if o["kind"] == "Secret" and o["metadata"]["name"] == _expected_name(o)}
    assert versioned
    secrets = [s for s in rendering.secret_values if len(s) >= 8]
    for key, obj in versioned.items():
        version = obj["metadata"]["name"].rsplit("-", 1)[1]
        assert len(version) == rotation.DIGEST_CHARS
        for secret in secrets:
            assert secret not in version and version not in secret
            for digest in (hashlib.sha256(secret.encode()).hexdigest(),
                           hashlib.md5(secret.encode()).hexdigest()):
                assert version not in digest
        # in plain sight: the name (and the templates naming it) is not turned into a secret
        registration = rendering.registration("Secret", obj["metadata"]["name"])
        assert "metadata" not in registration.secret_props, key
        for r in rendering.resources.values():
            if kind_of(r) == "Deployment":
                assert "spec" not in r.secret_props, r.name


@pytest.mark.parametrize("config, name", [(PUSHED, "minio-credentials"),
                                          (EXTERNAL_KEYS, "trainstack-store-credentials")])
def test_the_jobs_secret_is_the_twin_of_the_one_that_rolls(config, name):
    rendering = render(config)
    rolled = rendering.objects[f"Secret/{versioned(rendering, 'Secret', name)}"]
    assert rendering.objects[f"Secret/{name}"]["stringData"] == rolled["stringData"]


def test_secrets_the_user_manages_are_not_digested():
    rendered = render(CONFIGS[-1])
    assert [k for k in rendered.objects if k.startswith("Secret/")] == []
    assert "random:index/randomPassword:RandomPassword" not in {
        r.type for r in rendered.resources.values()}
