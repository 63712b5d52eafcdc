"""The "What the stack requests" tables of docs/operations.md, computed from what the stack
renders (Pulumi's mocks), so the docs cannot drift from the code:

    .venv/bin/python -m tests.infra.cost_table     # rewrite the tables in the docs

tests/infra/test_infra_cost_table.py fails while the docs and the renderings differ.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from kubernetes.utils import parse_quantity

from tests.infra.infra_helpers import PUSHED, pod_specs
from tests.infra.render import render

DOCS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
BEGIN, END = "<!-- cost tables: begin -->", "<!-- cost tables: end -->"
REST = {"Deployment/minio": "MinIO", "Deployment/mlflow": "MLflow",
        "Deployment/inference": "the app (per replica)"}
SETUP = {"Job/trainstack-buckets": "bucket Job", "Job/trainstack-ingest-cifar10": "ingest Job"}
GPU = {**PUSHED, "gpusPerWorker": "1", "workers": "4", "cpuPerWorker": "8",
       "memoryPerWorker": "32Gi"}


def dev_config() -> dict[str, str]:
    import yaml

    config = yaml.safe_load((DOCS.parents[1] / "Pulumi.dev.yaml").read_text())["config"]
    return {k.split(":", 1)[1]: str(v) for k, v in config.items() if k.startswith("trainstack:")}


def _q(value) -> float:
    return float(parse_quantity(value))


def _cpu(value: float) -> str:
    return f"{value:g}" if value >= 1 else f"{value * 1000:g}m"


def _mem(value: float) -> str:
    gib = value / 2**30
    return f"{round(gib, 2):g}Gi" if gib >= 1 else f"{value / 2**20:g}Mi"


def _resources(spec: dict) -> tuple[dict, dict]:
    container = spec["containers"][0]["resources"]
    return container.get("requests", {}), container.get("limits", {})


def rest_table() -> list[str]:
    rendering = render(PUSHED)
    specs = pod_specs(rendering)
    rows = [("| always running | CPU request / limit | memory request / limit | disk (ephemeral) "
            "| volume |"), "|---|---|---|---|---|"]
    totals = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    volumes = {"Deployment/minio": "PersistentVolumeClaim/minio-data",
               "Deployment/mlflow": "PersistentVolumeClaim/mlflow-data"}
    for key, name in REST.items():
        req, lim = _resources(specs[key])
        claim = rendering.objects.get(volumes.get(key, ""))
        volume = claim["spec"]["resources"]["requests"]["storage"] if claim else "-"
        values = [_q(req["cpu"]), _q(lim["cpu"]), _q(req["memory"]), _q(lim["memory"]),
                  _q(req["ephemeral-storage"]), _q(volume) if claim else 0.0]
        totals = [t + v for t, v in zip(totals, values)]
        rows.append(f"| {name} | {_cpu(values[0])} / {_cpu(values[1])} | {_mem(values[2])} / "
                    f"{_mem(values[3])} | {_mem(values[4])} | {volume} |")
    rows.append(f"| **total** | {_cpu(totals[0])} / {_cpu(totals[1])} | {_mem(totals[2])} / "
                f"{_mem(totals[3])} | {_mem(totals[4])} | {_mem(totals[5])} |")
    return rows


def training_table() -> list[str]:
    rows = [("| configuration | training pods | per pod (request = limit): CPU, memory, GPU, disk "
            "| the whole job |"), "|---|---|---|---|"]
    for name, config in (("dev (`Pulumi.dev.yaml`, fastcifar)", dev_config()),
                         ("CPU cluster (the defaults, resnet18)", PUSHED),
                         ("GPU ([GPU clusters](#gpu-clusters): 4 pods, 1 GPU each)", GPU)):
        rendering = render(config)
        job = next(k for k in pod_specs(rendering) if k.endswith("/Master"))
        req, _ = _resources(pod_specs(rendering)[job])
        pods = int(config.get("workers", "2"))
        gpu = int(req.get("nvidia.com/gpu", "0"))
        rows.append(f"| {name} | {pods} | {_cpu(_q(req['cpu']))} CPU, {_mem(_q(req['memory']))},"
                    f" {gpu} GPU, {_mem(_q(req['ephemeral-storage']))} | "
                    f"{_cpu(pods * _q(req['cpu']))} CPU, {_mem(pods * _q(req['memory']))}"
                    f"{f', {pods * gpu} GPU' if gpu else ''} |")
    return rows


def setup_table() -> list[str]:
    specs = pod_specs(render(PUSHED))
    rows = ["| runs once | CPU request / limit | memory request / limit | disk (ephemeral) |",
            "|---|---|---|---|"]
    for key, name in SETUP.items():
        req, lim = _resources(specs[key])
        rows.append(f"| {name} | {_cpu(_q(req['cpu']))} / {_cpu(_q(lim['cpu']))} | "
                    f"{_mem(_q(req['memory']))} / {_mem(_q(lim['memory']))} | "
                    f"{_mem(_q(req['ephemeral-storage']))} |")
    return rows


def tables() -> str:
    return "\n".join([BEGIN, "", *rest_table(), "", *training_table(), "", *setup_table(), "",
                      END])


def rewrite(text: str) -> str:
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.DOTALL)
    if not pattern.search(text):
        raise SystemExit(f"{DOCS} has no {BEGIN} ... {END} block")
    return pattern.sub(lambda _: tables(), text)


if __name__ == "__main__":
    DOCS.write_text(rewrite(DOCS.read_text()))
    sys.exit(0)
