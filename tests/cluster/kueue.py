"""Kueue v0.17.0 on a test control plane, its controller built from its Go module.

tools/controlplane/build.sh builds `cmd/kueue` (components.txt) and copies the module's
config/components. Applied here: Kueue's CRDs (`crd/bases`, with the conversion webhook
the release's `crd/patches/webhook_in_*` give them), its namespace, and the webhooks of
what the stack's training jobs meet (Kueue's own kinds, `kubeflow.org/pytorchjob`,
`trainer.kubeflow.org/trainjob`) from `webhook/`. The controller runs here as a local
process on 127.0.0.1, so, as for Trainer v2 (tests/cluster/trainer_v2.py), only this is
adapted:

- every webhook (admission and conversion) is `url: https://127.0.0.1:<port><path>` with
  the test CA as caBundle; the webhooks of integrations the stack does not use are left
  out (Kueue would answer them with no-ops, but every Pod, Deployment and Job of the
  session would then wait for it);
- certificate management is off: the serving pair is read from `webhook.certDir`, and the
  metrics pair Kueue then insists on reading from /etc/kueue/metrics/certs is there in a
  mount namespace of its own (tests/cluster/mounts.py);
- the Configuration: `integrations.frameworks` is the two training APIs, metrics, leader
  election and the visibility server (feature gate VisibilityOnDemand) are off, the health
  probes listen on 127.0.0.1.
"""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any

import yaml

from infra.workloads.jobparts.kueue import FRAMEWORKS
from tests.cluster import certs, mounts
from tests.cluster.components import bin_path, component_root
from tests.cluster.controlplane import HOST, ControlPlane, _http_ok
from tests.cluster.trainer_v2 import kustomize, to_local_webhooks
from tests.testkit import free_port

NAMESPACE = "kueue-system"
METRICS_CERTS = "/etc/kueue/metrics/certs"
# The webhooks the stack's jobs and queues meet: (API group, resource).
WEBHOOKED = {("kueue.x-k8s.io", None), ("kubeflow.org", "pytorchjobs"),
             ("trainer.kubeflow.org", "trainjobs")}


def manifests() -> Path:
    return component_root("kueue") / "components"


def crds(port: int, ca: bytes) -> list[dict[str, Any]]:
    """The CRDs, with the release's conversion webhook (to 127.0.0.1) where it has one."""
    converted = {path.name.removeprefix("webhook_in_").removesuffix(".yaml")
                 for path in (manifests() / "crd" / "patches").glob("webhook_in_*.yaml")}
    found = []
    for path in sorted((manifests() / "crd" / "bases").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        if crd["spec"]["names"]["plural"] in converted:
            crd["spec"]["conversion"] = {"strategy": "Webhook", "webhook": {
                "clientConfig": {"url": f"https://{HOST}:{port}/convert",
                                 "caBundle": base64.b64encode(ca).decode()},
                "conversionReviewVersions": ["v1"]}}
        found.append(crd)
    return found


def _needed(hook: dict[str, Any]) -> bool:
    return any((group, None) in WEBHOOKED or (group, resource) in WEBHOOKED
               for rule in hook.get("rules") or [] for group in rule["apiGroups"]
               for resource in rule["resources"])


def webhooks(port: int, ca: bytes) -> list[dict[str, Any]]:
    configurations = []
    for obj in to_local_webhooks(kustomize(manifests() / "webhook"), port, ca, prefix="kueue-"):
        obj = copy.deepcopy(obj)
        obj["webhooks"] = [hook for hook in obj["webhooks"] if _needed(hook)]
        configurations.append(obj)
    return configurations


def configuration(webhook_port: int, probe_port: int, cert_dir: Path) -> dict[str, Any]:
    return {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2", "kind": "Configuration",
        "namespace": NAMESPACE,
        "health": {"healthProbeBindAddress": f"{HOST}:{probe_port}"},
        "metrics": {"bindAddress": "0"},
        "webhook": {"port": webhook_port, "host": HOST, "certDir": str(cert_dir)},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "manageJobsWithoutQueueName": False,
        "integrations": {"frameworks": sorted(FRAMEWORKS.values())},
    }


def install(cp: ControlPlane, workdir: Path) -> None:
    """CRDs, namespace and webhooks, then Kueue itself, ready (webhook server up)."""
    authority = certs.Authority("kueue-webhooks-ca")
    serving = authority.serving()
    webhook_port, probe_port = free_port(), free_port()
    definitions = crds(webhook_port, authority.pair.cert)
    cp.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
              *definitions])
    for crd in definitions:
        cp.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                   f"crd/{crd['metadata']['name']}")
    cp.apply(webhooks(webhook_port, authority.pair.cert))
    cert_dir = workdir / "certs"
    serving.write(cert_dir, "tls.crt", "tls.key")
    config = workdir / "config.yaml"
    config.write_text(yaml.safe_dump(configuration(webhook_port, probe_port, cert_dir)))
    metrics = authority.serving()
    argv = mounts.with_files(
        [bin_path("kueue"), f"--config={config}", "--feature-gates=VisibilityOnDemand=false",
         "--zap-log-level=info"],
        {f"{METRICS_CERTS}/tls.crt": metrics.cert, f"{METRICS_CERTS}/tls.key": metrics.key},
        workdir / "private")
    cp.start_process("kueue", argv, env=cp.client_env(),
                     ready=lambda: _http_ok(f"http://{HOST}:{probe_port}/readyz"))


def built() -> bool:
    try:
        bin_path("kueue")
    except Exception:  # noqa: BLE001 - ComponentMissing: not built here
        return False
    return mounts.available()
