"""Small accessors over rendered manifests."""

from __future__ import annotations

from typing import Any

from tests.infra.render import Rendering

PASSWORD = "cfg-secret-password-4b9d2e"  # as `pulumi config set --secret minioRootPassword`
# pushImage defaults to true, which needs a registry path: a user of a real cluster sets
# `image` and keeps the other defaults. Renderings of "the defaults" start from this.
IMAGE = "registry.example.com/team/trainstack-trainer"
PUSHED = {"image": IMAGE}


def one(rendering: Rendering, kind: str) -> dict[str, Any]:
    found = [v for k, v in rendering.objects.items() if k.startswith(f"{kind}/")]
    assert len(found) == 1, f"expected one {kind}, got {[k for k in rendering.objects]}"
    return found[0]


def pytorchjob(rendering: Rendering) -> dict[str, Any]:
    return one(rendering, "PyTorchJob")


def pod_specs(rendering: Rendering) -> dict[str, dict[str, Any]]:
    """Every pod spec: Deployments, Jobs and each PyTorchJob replica."""
    specs = {}
    for key, obj in rendering.objects.items():
        if obj["kind"] in ("Deployment", "Job"):
            specs[key] = obj["spec"]["template"]["spec"]
        elif obj["kind"] == "PyTorchJob":
            for rtype, replica in obj["spec"]["pytorchReplicaSpecs"].items():
                specs[f"{key}/{rtype}"] = replica["template"]["spec"]
    return specs


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}
