"""The Kubeflow Training Operator on the test control plane, installed as the stack does.

The objects are the standalone overlay the stack installs (infra/operators/training_operator.py),
built by kubectl's kustomize from the pinned module's manifests/ (build.sh copies them).
Its Deployment is applied (kwok fakes its pod); the operator itself runs here as a local
process (tools/controlplane/training-operator, bound to 127.0.0.1), so three parts of the
overlay are adapted to reach it, and nothing else:

- the webhook Service becomes an ExternalName Service to `localhost`, and the webhook
  configuration's port is the local webhook port: the API server resolves an ExternalName
  Service to that name, so admission reviews go to 127.0.0.1 alone;
- v1.8.1 waits for certificates a kubelet would mount from its Secret into a fixed folder
  (/tmp/k8s-webhook-server/serving-certs, pkg/cert/cert.go): the Secret is created with a
  CA and serving pair and the files are written there. The pair is made once and kept in
  the component's cache, so sessions running side by side write identical files;
- the init-container template the stack's patch mounts (infra/operators/training_operator.py) is
  passed with --pytorch-init-container-template-file, the file the patch mounts it as.
"""

from __future__ import annotations

import base64
import datetime
import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.cluster import certs
from tests.cluster.components import bin_path, component_root
from tests.cluster.controlplane import HOST, ControlPlane, _http_ok
from tests.testkit import free_port

NAMESPACE = "kubeflow"
SERVICE = "training-operator"
SECRET = "training-operator-webhook-cert"
CERT_DIR = Path("/tmp/k8s-webhook-server/serving-certs")  # v1.8.1 pkg/cert/cert.go certDir
OVERLAY = "manifests/overlays/standalone"


def overlay_objects() -> list[dict[str, Any]]:
    """The standalone overlay, as `kustomize build` renders it (the stack's source)."""
    kubectl = bin_path("kube", "kubectl")
    out = subprocess.run([str(kubectl), "kustomize", str(component_root("training-operator")
                                                          / OVERLAY)],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def webhook_pair() -> certs.Pair:
    """One CA and serving pair for every session (see the module docstring)."""
    folder = component_root("training-operator") / "webhook-certs"
    names = ("ca.crt", "ca.key", "tls.crt", "tls.key")
    ca_path, ca_key_path, cert_path, key_path = (folder / n for n in names)
    if not key_path.exists():
        authority = certs.Authority("training-operator-ca", datetime.timedelta(days=3650))
        pair = authority.serving(f"{SERVICE}.{NAMESPACE}.svc")
        folder.mkdir(parents=True, exist_ok=True)
        authority.pair.write(folder, "ca.crt", "ca.key")
        pair.write(folder, "tls.crt", "tls.key")
    return certs.Pair(cert=cert_path.read_bytes(), key=key_path.read_bytes(),
                      ca=ca_path.read_bytes(), ca_key=ca_key_path.read_bytes())


def write_fixed_certs(pair: certs.Pair) -> None:
    """The pair at CERT_DIR (the same files for every session: see the module docstring).
    Trainer v2's status server reads that folder too (tests/cluster/trainer_v2.py)."""
    CERT_DIR.mkdir(parents=True, exist_ok=True)
    for name, data in (("tls.crt", pair.cert), ("tls.key", pair.key), ("ca.crt", pair.ca)):
        path = CERT_DIR / name
        if not path.exists() or path.read_bytes() != data:
            path.write_bytes(data)


def adapted(objects: list[dict[str, Any]], webhook_port: int, pair: certs.Pair
            ) -> list[dict[str, Any]]:
    out = []
    for obj in objects:
        obj = json.loads(json.dumps(obj))
        kind, name = obj["kind"], obj["metadata"]["name"]
        if kind == "Service" and name == SERVICE:
            obj["spec"] = {"type": "ExternalName", "externalName": "localhost",
                           "ports": [{"name": "webhook-server", "port": webhook_port}]}
        elif kind == "Secret" and name == SECRET:
            obj["data"] = {k: base64.b64encode(v).decode() for k, v in (
                ("ca.crt", pair.ca), ("ca.key", pair.ca_key), ("tls.crt", pair.cert),
                ("tls.key", pair.key))}
        elif kind == "ValidatingWebhookConfiguration":
            for hook in obj["webhooks"]:
                hook["clientConfig"]["service"]["port"] = webhook_port
                hook["clientConfig"]["caBundle"] = base64.b64encode(pair.ca).decode()
        out.append(obj)
    return out


def in_apply_order(objects: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Namespaces and CRDs first (what the rest needs to exist), then the rest."""
    first = [o for o in objects if o["kind"] in ("Namespace", "CustomResourceDefinition")]
    return [first, [o for o in objects if o not in first]]


def install(cp: ControlPlane, init_container_template: str, workdir: Path) -> None:
    """Apply the overlay, start the operator here, wait for its /readyz (webhook up)."""
    pair = webhook_pair()
    webhook_port, probe_port = free_port(), free_port()
    for batch in in_apply_order(adapted(overlay_objects(), webhook_port, pair)):
        cp.apply(batch)
    cp.kubectl("wait", "--for=condition=Established", "--timeout=60s",
               "crd/pytorchjobs.kubeflow.org")
    write_fixed_certs(pair)
    template = workdir / "initContainer.yaml"
    template.write_text(init_container_template)
    cp.start_process("training-operator", [
        bin_path("training-operator"), f"--webhook-host={HOST}",
        f"--webhook-server-port={webhook_port}", "--metrics-bind-address=0",
        f"--health-probe-bind-address={HOST}:{probe_port}",
        f"--pytorch-init-container-template-file={template}", "--zap-log-level=info",
    ], env={**cp.client_env(), "MY_POD_NAMESPACE": NAMESPACE},
        ready=lambda: _http_ok(f"http://{HOST}:{probe_port}/readyz"))
