"""Rotating a secret the stack manages rolls exactly the pods that read it at start: each
such pod template carries a digest of the secret's version (an HMAC under a generated key,
never the value), so a new value changes exactly those templates and nothing else."""

from __future__ import annotations

import hashlib

import pytest

from tests.infra.infra_helpers import EXTERNAL_KEYS, PASSWORD, PUSHED, S3_SECRET_KEY
from tests.infra.render import render

TOKEN = "0123456789abcdef0123456789abcdef"
ANNOTATION_PREFIX = "trainstack.dev/"
STORE_CLIENTS = {"Deployment/inference", "Deployment/mlflow", "PyTorchJob"}


def _changed(before, after) -> set[str]:
    keys = set(before.objects) | set(after.objects)
    changed = {k for k in keys if before.objects.get(k) != after.objects.get(k)}
    return {k.split("/")[0] if k.startswith("PyTorchJob/") else k for k in changed}


# (name, config before, config after, rotated generated passwords, what must change)
ROTATIONS = [
    ("minioRootPassword", {**PUSHED, "minioRootPassword": PASSWORD},
     {**PUSHED, "minioRootPassword": PASSWORD + "-new"}, (),
     {"Secret/minio-credentials", "Deployment/minio", *STORE_CLIENTS}),
    ("generated MinIO password", PUSHED, PUSHED, ("minio-root-password",),
     {"Secret/minio-credentials", "Deployment/minio", *STORE_CLIENTS}),
    ("storeSecretKey", EXTERNAL_KEYS, {**EXTERNAL_KEYS, "storeSecretKey": S3_SECRET_KEY + "x"},
     (), {"Secret/trainstack-store-credentials", *STORE_CLIENTS}),
    ("storeAccessKey", EXTERNAL_KEYS, {**EXTERNAL_KEYS, "storeAccessKey": "AKIANEWKEY"}, (),
     {"Secret/trainstack-store-credentials", *STORE_CLIENTS}),
    ("inferenceAuthToken", {**PUSHED, "inferenceAuthToken": TOKEN},
     {**PUSHED, "inferenceAuthToken": TOKEN[::-1]}, (),
     {"Secret/inference-auth", "Deployment/inference"}),
    # The trainer's tracking never stops training: its pods get the new login at their
    # next start (docs/security.md, "Rotating secrets").
    ("MLflow login", {**PUSHED, "mlflowAccess": "login"}, {**PUSHED, "mlflowAccess": "login"},
     ("mlflow-admin-password",),
     {"Secret/mlflow-auth", "Secret/mlflow-client", "Deployment/mlflow"}),
]


@pytest.mark.parametrize("name, before, after, rotated, expected", ROTATIONS,
                         ids=[r[0] for r in ROTATIONS])
def test_a_rotation_rolls_exactly_the_pods_that_read_the_secret(name, before, after, rotated,
                                                                 expected):
    old, new = render(before), render(after, rotated=rotated)
    assert _changed(old, new) == expected
    assert _changed(old, render(before)) == set()  # stable: no rollout without a change


def _annotations(rendering) -> dict[str, dict[str, str]]:
    found = {}
    for key, obj in rendering.objects.items():
        if obj["kind"] in ("Deployment", "Job"):
            templates = [obj["spec"]["template"]]
        elif obj["kind"] == "PyTorchJob":
            templates = [r["template"] for r in obj["spec"]["pytorchReplicaSpecs"].values()]
        else:
            continue
        for template in templates:
            for name, value in (template["metadata"].get("annotations") or {}).items():
                if name.startswith(ANNOTATION_PREFIX):
                    found.setdefault(key, {})[name] = value
    return found


@pytest.mark.parametrize("config", [{**PUSHED, "minioRootPassword": PASSWORD,
                                     "inferenceAuthToken": TOKEN, "mlflowAccess": "login"},
                                    {**EXTERNAL_KEYS, "inferenceAuthToken": TOKEN}])
def test_the_version_reveals_nothing_and_is_not_secret(config):
    rendering = render(config)
    annotated = _annotations(rendering)
    assert annotated and not [k for k in annotated if k.startswith("Job/")]
    values = {v for a in annotated.values() for v in a.values()}
    secrets = [s for s in rendering.secret_values if len(s) >= 8]
    for value in values:
        for secret in secrets:
            assert secret not in value and value not in secret
            for digest in (hashlib.sha256(secret.encode()).hexdigest(),
                           hashlib.md5(secret.encode()).hexdigest()):
                assert value not in digest
    for key in annotated:  # in plain sight: the template is not turned into a secret
        kind, name = key.split("/", 1)
        assert "spec" not in rendering.registration(kind, name).secret_props, key


def test_secrets_the_user_manages_are_not_digested():
    rendered = render({**PUSHED, "storeCredentialsSecret": "team-s3",
                       "inferenceAuthSecret": "app-token"})
    assert _annotations(rendered) == {}
    assert "random:index/randomPassword:RandomPassword" not in {
        r.type for r in rendered.resources.values()}
