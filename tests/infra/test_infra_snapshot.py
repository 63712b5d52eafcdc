"""What the program registers, per configuration, against a committed snapshot.

A user's stack state must not see a resource renamed, retyped, reparented or changed by a
move of code: every registration (URN, type, parent, inputs, options) of fifteen
configurations is hashed and compared with tests/infra/render_snapshot.json. The image
tag is a hash of the build inputs, which any code change rightly changes (and with it the
digest and the training job's name): the test fixes it, so only what the program declares
is compared.

A change that is meant to change what is rendered updates the snapshot on purpose:

    UPDATE_RENDER_SNAPSHOT=1 .venv/bin/python -m pytest tests/infra/test_infra_snapshot.py

and the diff of render_snapshot.json shows which registrations it touched.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from infra.workloads import image
from tests.infra.infra_helpers import (
    EXTERNAL,
    EXTERNAL_KEYS,
    PASSWORD,
    PREBUILT,
    PUSHED,
    RENDERED,
)
from tests.infra.render import Rendering, render

SNAPSHOT = Path(__file__).with_name("render_snapshot.json")
MLFLOW_IMAGE = "registry.example.com/mirror/mlflow:v3.17.2-full@sha256:" + "9f" * 32
TOKEN = "snapshot-token-0123456789abcdef0123456789"
CONFIGS: dict[str, dict[str, str]] = {
    "minikube": {"workers": "2", "cpuPerWorker": "1500m", "memoryPerWorker": "2Gi",
                 "model": "fastcifar", "epochs": "8", "batchSize": "32", "learningRate": "0.2",
                 "pushImage": "false", "inferenceServiceType": "NodePort"},
    "pushed": PUSHED,
    "single": {"workers": "1", "inferenceReplicas": "2", "pushImage": "false"},
    "gpu": {**PUSHED, "workers": "3", "gpusPerWorker": "2", "minioRootPassword": PASSWORD,
            "inferenceAuthToken": TOKEN,
            "nodeSelector": json.dumps({"nvidia.com/gpu.present": "true"}),
            "tolerations": json.dumps([{"key": "nvidia.com/gpu", "operator": "Exists",
                                        "effect": "NoSchedule"}])},
    "external-s3": EXTERNAL,
    "external-keys": {**EXTERNAL_KEYS, "networkPolicy": "ingress-egress"},
    "prebuilt": PREBUILT,
    "auth-fenced": {**PUSHED, "inferenceAuthToken": TOKEN, "networkPolicy": "ingress-egress",
                    "minioRootPassword": PASSWORD},
    "no-mlflow": {**PUSHED, "mlflow": "false"},
    "mlflow-login": {**PUSHED, "mlflowAccess": "login", "mlflowImage": MLFLOW_IMAGE},
    "trainjob": {**PUSHED, "trainingApi": "trainjob", "workers": "3", "gpusPerWorker": "2",
                 "networkPolicy": "ingress-egress", "mlflowImage": MLFLOW_IMAGE},
    "gitops": RENDERED,
    "gitops-app": {**RENDERED, "inferenceAuthSecret": "app-token",
                   "inferenceServiceType": "ClusterIP",
                   "inferenceIngressNamespace": "ingress-nginx"},
    "queued": {**PUSHED, "queue": "team-a",
               "queueQuota": json.dumps({"cpu": "8", "memory": "32Gi", "gpus": 0})},
    "queued-trainjob": {**PUSHED, "trainingApi": "trainjob", "queue": "team-a"},
}
_TAG = re.compile(r"\b(cpu|cu\d+)-[0-9a-f]{12,64}\b")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def _normalised(value: Any) -> Any:
    if isinstance(value, str):
        return _DIGEST.sub("sha256:<digest>", _TAG.sub(r"\1-<source-hash>", value))
    if isinstance(value, dict):
        return {k: _normalised(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalised(v) for v in value]
    return value


def registrations(rendering: Rendering) -> dict[str, str]:
    """URN -> sha256 of everything the engine is told about that resource."""
    hashed = {}
    for r in rendering.resources.values():
        record = {"type": r.type, "parent": r.parent, "custom": r.custom, "remote": r.remote,
                  "inputs": r.inputs, "dependencies": sorted(r.dependencies),
                  "property_dependencies": {k: sorted(v)
                                            for k, v in r.property_dependencies.items()},
                  "replace_on_changes": sorted(r.replace_on_changes),
                  "delete_before_replace": r.delete_before_replace,
                  "secret_props": sorted(r.secret_props), "provider": r.provider,
                  "custom_timeouts": r.custom_timeouts, "aliases": sorted(r.aliases),
                  # only where set: a new option must not rehash every registration
                  **({"retain_on_delete": True} if r.retain_on_delete else {})}
        text = json.dumps(_normalised(record), sort_keys=True, default=str)
        hashed[_normalised(r.urn)] = hashlib.sha256(text.encode()).hexdigest()[:16]
    return hashed


def test_every_configuration_registers_what_the_snapshot_holds(monkeypatch):
    monkeypatch.setattr(image, "source_hash", lambda *args, **kwargs: "0" * 16)
    rendered = {name: registrations(render(cfg)) for name, cfg in CONFIGS.items()}
    if os.environ.get("UPDATE_RENDER_SNAPSHOT"):
        SNAPSHOT.write_text(json.dumps(rendered, indent=1, sort_keys=True) + "\n")
        pytest.skip(f"wrote {SNAPSHOT.name}")
    expected = json.loads(SNAPSHOT.read_text())
    problems = []
    for name in sorted(set(expected) | set(rendered)):
        before, now = expected.get(name, {}), rendered.get(name, {})
        gone, new = sorted(set(before) - set(now)), sorted(set(now) - set(before))
        changed = sorted(u for u in set(before) & set(now) if before[u] != now[u])
        if gone or new or changed:
            problems.append(f"{name}: gone {gone}, new {new}, changed {changed}")
    assert not problems, "\n".join(problems)
