"""Kubeflow Trainer v2 and JobSet on the test control plane, from their pinned modules.

tools/controlplane/trainer-v2/build.sh builds both controllers (the versions of
infra/operators/trainer_v2.py) and links their modules' manifests. Applied here, as kustomize
renders them from those modules: Trainer's namespace, CRDs and webhook configurations
(the manager overlay's `base/crds` and `base/webhook`), JobSet's CRD and webhook
configurations (`config/components/crd/bases`, `config/components/webhook`). The
controllers run here as local processes on 127.0.0.1, so three things are adapted, and
nothing else:

- every webhook's clientConfig is `url: https://127.0.0.1:<port><path>` (the process's
  local webhook port) with the test CA as caBundle, instead of a Service;
- both controllers' own certificate management is off (Trainer: `certManagement.enable:
  false`; JobSet: `internalCertManagement.enable: false`) and they read a serving pair
  signed by that CA from disk: JobSet from its `webhook.certDir`, Trainer (no such
  setting) from controller-runtime's default `$TMPDIR/k8s-webhook-server/serving-certs`,
  with TMPDIR private to the process;
- JobSet's CRD without the release's conversion webhook (one served version:
  nothing to convert), JobSet's webhook configurations named as its release names them.

Leader election and metrics are off; the health probes listen on 127.0.0.1; readiness
(/readyz) passes once a controller's webhook server is up.

Trainer's status server (feature gate TrainJobStatus, `install(status=True)`; off by
default) needs three more things a pod would have: its own service account token, from
which it learns the cluster's token issuer (/var/run/secrets/kubernetes.io/serviceaccount,
placed in a mount namespace of its own: tests/cluster/mounts.py; the control plane's
issuer must be its own URL to be discoverable here: ControlPlane(discoverable_issuer)),
a serving pair in the fixed /tmp/k8s-webhook-server/serving-certs (the Training
Operator's shared pair, tests/cluster/operator.py), and its CA in the webhook Secret it
copies into each TrainJob's namespace for the pods. It listens on every interface (v2.3.0
has no setting for its address); the pods reach it at 127.0.0.1.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from infra.operators.trainer_v2 import JOBSET_VERSION, TRAINER_NAMESPACE
from infra.operators.trainer_v2 import VERSION as TRAINER_VERSION
from tests.cluster import certs, mounts, operator
from tests.cluster.components import ComponentMissing, bin_path, cache_root
from tests.cluster.controlplane import HOST, ControlPlane, _http_ok
from tests.testkit import free_port

BUILD_SCRIPT = "tools/controlplane/trainer-v2/build.sh"
JOBSET_PREFIX = "jobset-"  # the release's namePrefix for its objects
STATUS_GATE = "TrainJobStatus"
MANAGER = "kubeflow-trainer-controller-manager"  # its ServiceAccount and Service
WEBHOOK_SECRET = "kubeflow-trainer-webhook-cert"
POD_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


@dataclass(frozen=True)
class StatusServer:
    """Where Trainer's status server listens here, and the CA of its serving pair."""

    port: int
    ca: bytes


@dataclass(frozen=True)
class Component:
    name: str
    version: str
    binary: str

    @property
    def root(self) -> Path:
        return cache_root() / f"{self.name}-{self.version}"

    @property
    def executable(self) -> Path:
        path = self.root / "bin" / self.binary
        if not path.is_file():
            raise ComponentMissing(f"{path} is missing: run `{BUILD_SCRIPT}` (Go, module proxy)")
        return path

    @property
    def manifests(self) -> Path:
        return self.root / "manifests"


TRAINER = Component("trainer", TRAINER_VERSION, "trainer-controller-manager")
JOBSET = Component("jobset", JOBSET_VERSION, "jobset-controller")


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """`kustomize build` of a local directory (kubectl's, v1.34.2)."""
    out = subprocess.run([str(bin_path("kube", "kubectl")), "kustomize", str(directory)],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def to_local_webhooks(objects: list[dict[str, Any]], port: int, ca: bytes, prefix: str = ""
                      ) -> list[dict[str, Any]]:
    """Webhook configurations whose every webhook goes to https://127.0.0.1:<port>."""
    out = []
    for obj in json.loads(json.dumps(objects)):
        if obj["kind"] in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
            obj["metadata"]["name"] = prefix + obj["metadata"]["name"]
            for hook in obj["webhooks"]:
                path = hook["clientConfig"]["service"]["path"]
                hook["clientConfig"] = {"url": f"https://{HOST}:{port}{path}",
                                        "caBundle": base64.b64encode(ca).decode()}
            out.append(obj)
    return out


def trainer_objects(webhook_port: int, ca: bytes) -> list[dict[str, Any]]:
    crds = kustomize(TRAINER.manifests / "base" / "crds")
    hooks = to_local_webhooks(kustomize(TRAINER.manifests / "base" / "webhook"), webhook_port, ca)
    namespace = {"apiVersion": "v1", "kind": "Namespace",
                 "metadata": {"name": TRAINER_NAMESPACE}}
    return [namespace, *crds, *hooks]


def jobset_objects(webhook_port: int, ca: bytes) -> list[dict[str, Any]]:
    bases = sorted((JOBSET.manifests / "components" / "crd" / "bases").glob("*.yaml"))
    crds = [doc for path in bases for doc in yaml.safe_load_all(path.read_text()) if doc]
    hooks = to_local_webhooks(kustomize(JOBSET.manifests / "components" / "webhook"),
                              webhook_port, ca, prefix=JOBSET_PREFIX)
    return [*crds, *hooks]


@dataclass
class Controller:
    """A controller's local ports and the files it reads."""

    name: str
    workdir: Path
    webhook_port: int
    probe_port: int

    @property
    def ready_url(self) -> str:
        return f"http://{HOST}:{self.probe_port}/readyz"


def _controller(name: str, workdir: Path) -> Controller:
    folder = workdir / name
    folder.mkdir(parents=True, exist_ok=True)
    return Controller(name, folder, free_port(), free_port())


def _write(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def start_trainer(cp: ControlPlane, ctl: Controller, pair: certs.Pair,
                  status: StatusServer | None = None) -> None:
    tmpdir = ctl.workdir / "tmp"
    pair.write(tmpdir / "k8s-webhook-server" / "serving-certs", "tls.crt", "tls.key")
    gate = {"featureGates": {STATUS_GATE: True}, "statusServer": {"port": status.port}} \
        if status else {}
    config = _write(ctl.workdir / "config.yaml", {
        "apiVersion": "config.trainer.kubeflow.org/v1alpha1", "kind": "Configuration",
        "health": {"healthProbeBindAddress": f"{HOST}:{ctl.probe_port}",
                   "readinessEndpointName": "readyz", "livenessEndpointName": "healthz"},
        "metrics": {"bindAddress": "0"},
        "webhook": {"port": ctl.webhook_port, "host": HOST},
        "leaderElection": {"leaderElect": False},
        "certManagement": {"enable": False},
        **gate,
    })
    argv = [TRAINER.executable, f"--config={config}", "--zap-log-level=info"]
    if status:
        argv = mounts.with_files(argv, {f"{POD_ACCOUNT_DIR}/token": manager_token(cp),
                                        f"{POD_ACCOUNT_DIR}/namespace": TRAINER_NAMESPACE.encode()},
                                 ctl.workdir / "private")
    cp.start_process("trainer-controller-manager", argv,
                     env={**cp.client_env(), "TMPDIR": str(tmpdir)},
                     ready=lambda: _http_ok(ctl.ready_url))


def manager_token(cp: ControlPlane) -> bytes:
    """A token of the manager's ServiceAccount, as its pod would have one."""
    cp.apply([{"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": {"name": MANAGER, "namespace": TRAINER_NAMESPACE}}])
    return cp.kubectl("create", "token", MANAGER, "-n", TRAINER_NAMESPACE,
                      "--duration=24h").stdout.strip().encode()


def status_server(cp: ControlPlane) -> StatusServer:
    """The status server's pair (the shared one in its fixed folder) and the webhook
    Secret whose ca.crt Trainer gives each TrainJob's pods."""
    pair = operator.webhook_pair()
    operator.write_fixed_certs(pair)
    cp.apply([{"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": WEBHOOK_SECRET, "namespace": TRAINER_NAMESPACE},
               "data": {"ca.crt": base64.b64encode(pair.ca).decode()}}])
    return StatusServer(free_port(), pair.ca)


def start_jobset(cp: ControlPlane, ctl: Controller, pair: certs.Pair) -> None:
    cert_dir = ctl.workdir / "certs"
    pair.write(cert_dir, "tls.crt", "tls.key")
    config = _write(ctl.workdir / "config.yaml", {
        "apiVersion": "config.jobset.x-k8s.io/v1alpha1", "kind": "Configuration",
        "health": {"healthProbeBindAddress": f"{HOST}:{ctl.probe_port}"},
        "metrics": {"bindAddress": "0"},
        "webhook": {"port": ctl.webhook_port, "host": HOST, "certDir": str(cert_dir)},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
    })
    cp.start_process("jobset-controller", [
        JOBSET.executable, f"--config={config}", "--zap-log-level=info"],
        env={**cp.client_env(), "TMPDIR": str(ctl.workdir)},
        ready=lambda: _http_ok(ctl.ready_url))


def install(cp: ControlPlane, workdir: Path, status: bool = False) -> StatusServer | None:
    """CRDs and webhooks of both, then JobSet (Trainer's runtimes need its CRD), then
    Trainer (with its status server when `status`), each ready (webhook server up)
    before this returns."""
    authority = certs.Authority("trainer-v2-webhooks-ca")
    pair = authority.serving()
    jobset, trainer = _controller("jobset", workdir), _controller("trainer", workdir)
    objects = [*jobset_objects(jobset.webhook_port, authority.pair.cert),
               *trainer_objects(trainer.webhook_port, authority.pair.cert)]
    first = [o for o in objects if o["kind"] in ("Namespace", "CustomResourceDefinition")]
    cp.apply(first)
    for crd in (o for o in first if o["kind"] == "CustomResourceDefinition"):
        cp.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                   f"crd/{crd['metadata']['name']}")
    cp.apply([o for o in objects if o not in first])
    start_jobset(cp, jobset, pair)
    server = status_server(cp) if status else None
    start_trainer(cp, trainer, pair, server)
    return server


def built() -> bool:
    return all(os.access(c.root / "bin" / c.binary, os.X_OK) for c in (TRAINER, JOBSET))
