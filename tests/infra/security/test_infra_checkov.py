"""An outside policy scanner over what the stack renders: checkov (requirements-checkov.txt,
in its own venv .venv-checkov, which `make test` creates: its pins clash with the
project's) over the objects of five configurations, the PyTorchJob's replica templates
written as the Pods the operator creates, and over trainer/Dockerfile. Every failed check
must be covered by tests/infra/checkov_skips.py, and every entry there must still be needed.
"""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.infra.checkov_skips import SKIPS
from tests.infra.infra_helpers import (
    EXTERNAL,
    PASSWORD,
    PUSHED,
    RENDERED,
    replica_pods,
    trainjob_pods,
)
from tests.infra.render import render

log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parents[3]
CHECKOV = REPO_ROOT / ".venv-checkov" / "bin" / "checkov"
DOCKERFILE = REPO_ROOT / "trainer" / "Dockerfile"
AUTH_TOKEN = "checkov-scan-token-0123456789abcdef"  # as `pulumi config set --secret`
# The MLflow server pinned by digest, as a GitOps or EKS user would (docs/operations.md,
# "Images").
MLFLOW_IMAGE = "registry.example.com/mirror/mlflow:v3.17.2-full@sha256:" + "9f" * 32
CONFIGS = {
    "cpu": PUSHED,
    "gpu": {**PUSHED, "workers": "3", "gpusPerWorker": "2", "minioRootPassword": PASSWORD,
            "inferenceAuthToken": AUTH_TOKEN},
    # minikube's path: an unpushed image (the two skips scoped to this configuration)
    "single": {"workers": "1", "inferenceReplicas": "2", "pushImage": "false"},
    "external": {**EXTERNAL, "networkPolicy": "ingress-egress", "mlflowImage": MLFLOW_IMAGE},
    # Trainer v2 on GPUs behind egress fences.
    "trainjob": {**PUSHED, "trainingApi": "trainjob", "workers": "3", "gpusPerWorker": "2",
                 "networkPolicy": "ingress-egress", "mlflowImage": MLFLOW_IMAGE},
    # Retraining on a schedule and on drift (issue 30), egress fenced.
    "retrain": {**PUSHED, "retrainSchedule": "0 3 * * 0", "monitoring": "prometheus-operator",
                "retrainOnDrift": "true", "networkPolicy": "ingress-egress",
                "mlflowImage": MLFLOW_IMAGE},
    "rendered": {**RENDERED, "inferenceAuthSecret": "app-token",
                 "inferenceServiceType": "ClusterIP",
                 "inferenceIngressNamespace": "ingress-nginx", "mlflowImage": MLFLOW_IMAGE},
}


def scan_manifests(objects: dict[str, dict]) -> dict[str, dict]:
    """File name -> manifest: every object, a PyTorchJob as the Pods of its replicas, a
    TrainJob as its pod on the stack's TrainingRuntime (which is scanned in it)."""
    files = {}
    for key, obj in objects.items():
        if obj["kind"] in ("PyTorchJob", "TrainJob"):
            pods = (replica_pods(obj, per_type=True) if obj["kind"] == "PyTorchJob"
                    else trainjob_pods(objects, obj, per_job=True))
            for pod in pods:
                files[f"Pod-{pod['metadata']['name']}.yaml"] = pod
        elif obj["kind"] != "TrainingRuntime":
            files[f"{key.replace('/', '-')}.yaml"] = obj
    return files


def _checkov(*target: str) -> subprocess.Popen:
    if not CHECKOV.exists():
        pytest.fail(f"{CHECKOV} is missing: `make test` creates it (requirements-checkov.txt)")
    return subprocess.Popen([str(CHECKOV), *target, "-o", "json", "--compact",
                             "--skip-download"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _result(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode in (0, 1), err  # 1: some check failed
    report = json.loads(out)
    return report[0] if isinstance(report, list) else report


def run_scans(manifests: dict[str, dict[str, dict]], root: Path) -> dict[str, dict]:
    """checkov over each configuration's files (one run each: checkov links NetworkPolicies
    to pods by labels alone, so two configurations in one run would cover for each other)."""
    procs = {}
    for config, files in manifests.items():
        directory = root / config
        directory.mkdir(parents=True)
        for name, obj in files.items():
            (directory / name).write_text(yaml.safe_dump(obj, sort_keys=False))
        procs[config] = _checkov("-d", str(directory), "--framework", "kubernetes")
    return {config: _result(proc) for config, proc in procs.items()}


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> dict[str, dict]:
    root = tmp_path_factory.mktemp("checkov")
    dockerfile = _checkov("-f", str(DOCKERFILE), "--framework", "dockerfile")
    reports = run_scans({c: scan_manifests(render(cfg).objects) for c, cfg in CONFIGS.items()},
                        root)
    reports["dockerfile"] = _result(dockerfile)
    return reports


def failures(report: dict) -> list[tuple[str, str, str]]:
    """(check id, resource id, file name) of every failed check."""
    return [(c["check_id"], c["resource"], Path(c["file_path"]).name)
            for c in report.get("results", {}).get("failed_checks", [])]


def uncovered(config: str, report: dict) -> list[tuple[str, str, str]]:
    return [(check, resource, file) for check, resource, file in failures(report)
            if not any(s.covers(check, resource, config) for s in SKIPS)]


@pytest.mark.parametrize("config", [*CONFIGS, "dockerfile"])
def test_no_failed_check_outside_the_skip_list(scans, config):
    report = scans[config]
    summary = report["summary"]
    assert summary["parsing_errors"] == 0 and summary["resource_count"] > 0, summary
    assert summary["passed"] > 0
    skipped = len(failures(report)) - len(uncovered(config, report))
    log.info("checkov %s %s: passed %d, failed %d, skipped (listed) %d", summary[
        "checkov_version"], config, summary["passed"], len(uncovered(config, report)), skipped)
    assert uncovered(config, report) == []


def test_every_file_was_scanned(scans):
    """Every manifest with a pod was read and checked (a file checkov cannot parse would be
    missed silently); no file checked is one we did not write."""
    for config, cfg in CONFIGS.items():
        results = scans[config]["results"]
        checked = {Path(c["file_path"]).name
                   for c in results.get("passed_checks", []) + results.get("failed_checks", [])}
        files = scan_manifests(render(cfg).objects)
        with_pods = {n for n, o in files.items() if o["kind"] in ("Deployment", "Job", "Pod")}
        assert with_pods <= checked <= set(files), config


def test_every_skip_is_still_needed(scans):
    used = {s for config, report in scans.items() for check, resource, _ in failures(report)
            for s in SKIPS if s.covers(check, resource, config)}
    assert set(SKIPS) - used == set()


def test_every_skip_is_explained_to_operators():
    docs = (REPO_ROOT / "docs" / "security.md").read_text()
    section = docs.split("## What the policy scan skips", 1)[1].split("\n## ", 1)[0]
    for skip in SKIPS:
        assert skip.reason and f"`{skip.check}`" in section, skip.check


def test_the_scan_fails_on_a_regression(tmp_path):
    """The check can fail: the default configuration with the fences and hardening undone
    for the app is reported for exactly what was undone."""
    objects = {k: v for k, v in render(PUSHED).objects.items()
               if not k.startswith("NetworkPolicy/")}
    app = objects["Deployment/inference"]["spec"]["template"]["spec"]
    del app["automountServiceAccountToken"]
    app["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = False
    app["containers"][0]["securityContext"]["runAsUser"] = 1000
    report = run_scans({"cpu": scan_manifests(objects)}, tmp_path)["cpu"]
    found = {check for check, _, file in uncovered("cpu", report)
             if file == "Deployment-inference.yaml"}
    assert found == {"CKV_K8S_38", "CKV_K8S_22", "CKV_K8S_40", "CKV2_K8S_6"}
