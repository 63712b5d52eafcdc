"""Validation agrees with the API server: every value the server refuses (dryRun=All) is
refused earlier by parse_config, naming the key; every value parse_config accepts renders
objects the server accepts.

A small generator crosses label-ish parts (keys with prefixes, spaces, slashes; values
with spaces, slashes, 64 characters) into tolerations and nodeSelectors, and lists
quantities, namespaces and images; the review's cases are among them. The server's
verdict on a value comes from a probe: a `restricted` pod carrying the value where the
stack puts it (or a Namespace for a namespace), dry-run on the real API server.
"""

from __future__ import annotations

import itertools
import json
import logging

import pytest

from infra.config.keys import parse_config
from infra.workloads.pod import POD_SECURITY_LABELS
from tests.cluster.controlplane import KubectlFailed
from tests.cluster.stack_apply import creation_steps
from tests.infra.infra_helpers import PUSHED, replica_pods
from tests.infra.render import render
from trainer.contract.errors import ConfigError

log = logging.getLogger(__name__)
NS = "ts-validate"
LABEL_KEYS = ["gpu", "nvidia.com/gpu.product", "gpu type", "a/b/c", "-gpu", "x" * 64,
              "Example.com/gpu", "example.com/"]
LABEL_VALUES = ["A100", "", "A100 80GB/pcie", "x" * 64, "a_b.c-d", "-a"]
REVIEW_TOLERATIONS = [
    {"key": "nvidia.com/gpu", "operator": "Exists", "value": "present"},
    {"operator": "Equal", "value": "present"},
    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule",
     "tolerationSeconds": 60},
]


def toleration_cases() -> list[list[dict]]:
    cases = [[t] for t in REVIEW_TOLERATIONS]
    cases += [[{"operator": "Exists"}], [{"key": "k", "operator": "Exists",
                                          "effect": "NoExecute", "tolerationSeconds": 30}]]
    for key, value in itertools.product(LABEL_KEYS[:5], LABEL_VALUES[:4]):
        cases.append([{"key": key, "operator": "Equal", "value": value, "effect": "NoSchedule"}])
    return cases


def node_selector_cases() -> list[dict[str, str]]:
    return [{k: v} for k, v in itertools.product(LABEL_KEYS, LABEL_VALUES[:4])]


CASES = (
    [("tolerations", json.dumps(t)) for t in toleration_cases()]
    + [("nodeSelector", json.dumps(s)) for s in node_selector_cases()]
    + [("memoryPerWorker", m) for m in ("1", "1Ki", "511Mi", "512Mi", "1.5Gi", "2G")]
    + [("cpuPerWorker", c) for c in ("1", "500m", "0.25", "2")]
    + [("namespace", n) for n in ("ts-ok", "Ts-Upper", "a" * 64, "ts_under")]
    + [("image", i) for i in ("registry.example/team/trainer:1", "registry.example/UPPER:1")]
)


def probe(key: str, raw: str) -> list[dict]:
    """What the API server checks for the value, built without parse_config."""
    container = {"name": "pytorch", "image": "registry.example/trainer:1",
                 "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True,
                                     "runAsUser": 10001, "capabilities": {"drop": ["ALL"]},
                                     "seccompProfile": {"type": "RuntimeDefault"}}}
    spec: dict = {"containers": [container]}
    if key == "namespace":
        return [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": raw}}]
    if key == "tolerations":
        spec["tolerations"] = json.loads(raw)
    elif key == "nodeSelector":
        spec["nodeSelector"] = json.loads(raw)
    elif key in ("memoryPerWorker", "cpuPerWorker"):
        resource = "memory" if key == "memoryPerWorker" else "cpu"
        container["resources"] = {"requests": {resource: raw}, "limits": {resource: raw}}
    elif key == "image":
        container["image"] = raw
    return [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe", "namespace": NS},
             "spec": spec}]


def server_refuses(cp, objects: list[dict]) -> str | None:
    try:
        cp.apply(objects, dry_run=True)
    except KubectlFailed as refused:
        return str(refused)
    return None


def rendered_for_the_server(config: dict[str, str]) -> list[dict]:
    """Every object the stack declares, and the pods the operator makes of its PyTorchJob."""
    rendering = render(config)
    objects = [o for step in creation_steps(rendering) for o in step
               if o["kind"] != "Namespace" and not any(o is p for p in
                                                        rendering.patches.values())]
    for obj in list(objects):
        if obj["kind"] == "PyTorchJob":
            objects += replica_pods(obj)
    return objects


@pytest.fixture(scope="module")
def validating(operator):
    operator.apply([{"apiVersion": "v1", "kind": "Namespace",
                     "metadata": {"name": NS, "labels": POD_SECURITY_LABELS}}])
    # A dry run persists nothing: the pods' ServiceAccounts must really exist.
    accounts = [o for o in render({**PUSHED, "namespace": NS}).objects.values()
                if o["kind"] == "ServiceAccount"]
    operator.apply(accounts)
    return operator


@pytest.mark.parametrize(("key", "raw"), CASES, ids=[f"{k}={v}" for k, v in CASES])
def test_the_server_refuses_nothing_parse_config_accepts(validating, key, raw):
    config = {**PUSHED, "namespace": NS, key: raw}
    try:
        parse_config(config)
    except ConfigError as error:
        assert f"trainstack:{key}" in str(error)
        log.info("parse_config refuses %s=%s", key, raw)
        return
    refused = server_refuses(validating, probe(key, raw))
    assert refused is None, f"parse_config accepts {key}={raw} but the server refuses:\n{refused}"
    if key != "namespace":  # the whole stack with it, and the operator's pods
        config["namespace"] = NS
        refused = server_refuses(validating, rendered_for_the_server(config))
        assert refused is None, f"{key}={raw}: the server refuses the stack:\n{refused}"


def test_the_server_does_refuse_the_reviews_cases(validating):
    """The probes can fail: each review case is refused by the real server too."""
    for toleration in REVIEW_TOLERATIONS:
        assert server_refuses(validating, probe("tolerations", json.dumps([toleration])))
    assert server_refuses(validating, probe("nodeSelector", '{"gpu type": "a"}'))
    assert server_refuses(validating, probe("nodeSelector", '{"gpu": "A100 80GB/pcie"}'))
    assert server_refuses(validating, probe("tolerations", '[{"key": "gpu type", '
                                                           '"operator": "Exists"}]'))
