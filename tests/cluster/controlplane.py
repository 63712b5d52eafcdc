"""A real Kubernetes control plane on 127.0.0.1, for the cluster tier (tests/cluster).

    with ControlPlane.started(workdir) as cp:       # or the `control_plane` session fixture
        cp.kubectl("get", "nodes")                   # kubectl v1.34.2 with cp.kubeconfig
        cp.apply([manifest, ...])                     # server-side apply, one List
        cp.apply([manifest], dry_run=True)            # server-side dryRun=All
        cp.core.list_namespaced_pod("ns")             # the `kubernetes` Python client
        cp.start_process("my-controller", [...], env=cp.client_env())  # more components

etcd (a fresh data dir), kube-apiserver (RBAC, Pod Security admission and the rest of
its default admission chain), kube-controller-manager, kube-scheduler and kwok (fake
nodes: the real scheduler places pods on them and kwok marks them Running; no container
ever runs). Every port is chosen free at start, so two sessions can run side by side.
Nothing listens or dials beyond 127.0.0.1: the apiserver's endpoint reconciler is off (it
would publish the advertise address), the controller-manager and scheduler serve nothing
(--secure-port=0), kwok serves nothing and fakes node address 127.0.0.1, and the pod and
Service ranges are inside 127.0.0.0/8, so even a stray dial to a fake pod or Service IP
stays on this machine (tests/cluster/test_controlplane.py checks every socket).
"""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes
import yaml

from tests.cluster import certs
from tests.cluster.components import bin_path, component_root
from tests.cluster.processes import Processes
from tests.testkit import free_port

log = logging.getLogger(__name__)
HOST = "127.0.0.1"
# Inside loopback on purpose: see the module docstring.
SERVICE_CIDR = "127.96.0.0/16"
POD_CIDR = "127.244.0.0/16"
ADMIN_TOKEN_USER = "trainstack-admin"
FIELD_MANAGER = "trainstack-tests"
KWOK_STAGES = ("node/fast/node-initialize.yaml",
               "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
               "pod/fast/pod-ready.yaml", "pod/fast/pod-complete.yaml", "pod/fast/pod-delete.yaml")
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
STARTUP_TIMEOUT_S = 120
IN_CLUSTER_ISSUER = "https://kubernetes.default.svc"


class KubectlFailed(AssertionError):
    pass


class ControlPlane:
    def __init__(self, workdir: Path, discoverable_issuer: bool = False):
        self.workdir = workdir
        # The service account issuer is this server's own URL (its OIDC discovery is then
        # reachable here: Trainer v2's status server verifies pods' tokens by it); the
        # in-cluster name stays accepted.
        self.discoverable_issuer = discoverable_issuer
        self.processes = Processes(workdir / "logs")
        self.ca = certs.Authority("trainstack-test-ca")
        self.port = free_port()
        self.server = f"https://{HOST}:{self.port}"
        self.token = certs.random_token()
        self.kubeconfig = workdir / "kubeconfig"
        self.api: kubernetes.client.ApiClient | None = None

    # -- lifecycle -------------------------------------------------------------------------
    @classmethod
    @contextlib.contextmanager
    def started(cls, workdir: Path, discoverable_issuer: bool = False
                ) -> Iterator[ControlPlane]:
        cp = cls(workdir, discoverable_issuer)
        try:
            began = time.monotonic()
            cp.start()
            log.info("control plane ready in %.1fs (%s)", time.monotonic() - began, cp.server)
            yield cp
        finally:
            cp.stop()

    def start(self) -> None:
        self._write_files()
        self._start_etcd()
        self._start_apiserver()
        self.api = kubernetes.config.new_client_from_config(config_file=str(self.kubeconfig))
        self._start_controllers()
        self._start_kwok()

    def stop(self) -> None:
        self.processes.stop_all()
        if self.api is not None:
            self.api.close()

    def start_process(self, name: str, argv: list[Any], env: dict[str, str] | None = None,
                      ready: Callable[[], bool] | None = None) -> None:
        """Start another component (stopped with the rest), optionally waiting for `ready`."""
        self.processes.start(name, [str(a) for a in argv], env)
        if ready is not None:
            self.processes.wait_until(name, ready, STARTUP_TIMEOUT_S)

    def client_env(self) -> dict[str, str]:
        """What a controller-runtime/client-go program needs to find this API server."""
        return {"KUBECONFIG": str(self.kubeconfig)}

    # -- clients ---------------------------------------------------------------------------
    @property
    def core(self) -> kubernetes.client.CoreV1Api:
        return kubernetes.client.CoreV1Api(self.api)

    @property
    def custom(self) -> kubernetes.client.CustomObjectsApi:
        return kubernetes.client.CustomObjectsApi(self.api)

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout_s: float = 120) -> subprocess.CompletedProcess:
        argv = [str(bin_path("kube", "kubectl")), f"--kubeconfig={self.kubeconfig}", *args]
        done = subprocess.run(argv, input=input, capture_output=True, text=True,
                              timeout=timeout_s, check=False)
        if check and done.returncode != 0:
            raise KubectlFailed(f"kubectl {' '.join(args)} failed:\n{done.stderr}")
        return done

    def apply(self, objects: list[dict[str, Any]], dry_run: bool = False,
              field_manager: str = FIELD_MANAGER, check: bool = True, patch: bool = False
              ) -> subprocess.CompletedProcess:
        """`kubectl apply --server-side` of the objects as one List (dry_run: dryRun=All).

        patch: the objects are partial (a Pulumi *Patch resource): kubectl's client-side
        schema check, which wants whole objects, is skipped; the server validates the
        merged object as it does for Pulumi's own server-side apply."""
        args = ["apply", "--server-side", f"--field-manager={field_manager}",
                "--force-conflicts", "-o", "name", "-f", "-"]
        if patch:
            args.append("--validate=false")
        if dry_run:
            args.append("--dry-run=server")
        listing = {"apiVersion": "v1", "kind": "List", "items": objects}
        return self.kubectl(*args, input=json.dumps(listing), check=check)

    def get(self, *args: str) -> dict[str, Any]:
        return json.loads(self.kubectl("get", "-o", "json", *args).stdout)

    def wait_for(self, what: str, ready: Callable[[], Any], timeout_s: float = 60,
                 namespace: str | None = None) -> Any:
        """Poll until `ready()` returns something truthy; return it. On a timeout the
        error carries the namespace's pods and events (what a user would look at)."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = ready()
            if found:
                return found
            if time.monotonic() > deadline:
                seen = ""
                if namespace:
                    seen = "\n" + "\n".join(self.kubectl(
                        "get", kind, "-n", namespace, "-o", "wide", check=False).stdout
                        for kind in ("pods", "events"))
                raise AssertionError(f"timed out after {timeout_s}s waiting for {what}{seen}")
            time.sleep(0.3)

    # -- the components --------------------------------------------------------------------
    def _write_files(self) -> None:
        pki = self.workdir / "pki"
        self.ca_file, _ = self.ca.pair.write(pki, "ca.crt", "ca.key")
        self.serving_cert, self.serving_key = self.ca.serving("kubernetes").write(
            pki, "apiserver.crt", "apiserver.key")
        self.sa_key = pki / "sa.key"
        self.sa_key.write_bytes(certs.signing_key())
        self.token_file = pki / "tokens.csv"
        self.token_file.write_text(f'{self.token},{ADMIN_TOKEN_USER},1,"system:masters"\n')
        self.kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "trainstack-test",
            "clusters": [{"name": "trainstack-test", "cluster": {
                "server": self.server, "certificate-authority": str(self.ca_file)}}],
            "users": [{"name": "admin", "user": {"token": self.token}}],
            "contexts": [{"name": "trainstack-test",
                          "context": {"cluster": "trainstack-test", "user": "admin"}}],
        }))
        self.kubeconfig.chmod(0o600)

    def _start_etcd(self) -> None:
        client, peer = f"http://{HOST}:{free_port()}", f"http://{HOST}:{free_port()}"
        self.etcd_url = client
        self.processes.start("etcd", [
            bin_path("etcd"), "--name=trainstack-test", f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=trainstack-test={peer}", "--log-level=warn",
            "--unsafe-no-fsync"])  # a throwaway data dir: durability buys nothing here
        self.processes.wait_until("etcd", lambda: _http_ok(f"{client}/health"), STARTUP_TIMEOUT_S)

    def _issuer_flags(self) -> list[str]:
        issuers = [self.server] if self.discoverable_issuer else []
        flags = [f"--service-account-issuer={i}" for i in (*issuers, IN_CLUSTER_ISSUER)]
        if self.discoverable_issuer:
            flags.append(f"--service-account-jwks-uri={self.server}/openid/v1/jwks")
        return flags

    def _start_apiserver(self) -> None:
        self.processes.start("kube-apiserver", [
            bin_path("kube", "kube-apiserver"), f"--etcd-servers={self.etcd_url}",
            f"--bind-address={HOST}", f"--advertise-address={HOST}", f"--secure-port={self.port}",
            f"--cert-dir={self.workdir / 'pki'}", f"--tls-cert-file={self.serving_cert}",
            f"--tls-private-key-file={self.serving_key}", f"--client-ca-file={self.ca_file}",
            f"--token-auth-file={self.token_file}", "--authorization-mode=RBAC",
            f"--service-account-key-file={self.sa_key}",
            f"--service-account-signing-key-file={self.sa_key}", *self._issuer_flags(),
            f"--service-cluster-ip-range={SERVICE_CIDR}", "--endpoint-reconciler-type=none",
            "--profiling=false", "--v=1"])
        self.processes.wait_until("kube-apiserver", self._apiserver_ready, STARTUP_TIMEOUT_S)

    def _apiserver_ready(self) -> bool:
        return self.kubectl("get", "--raw=/readyz", check=False).returncode == 0

    def _controller_flags(self) -> list[str]:
        return [f"--kubeconfig={self.kubeconfig}", "--secure-port=0", "--leader-elect=true",
                "--leader-elect-lease-duration=15s", "--leader-elect-renew-deadline=10s",
                "--leader-elect-retry-period=2s"]

    def _start_controllers(self) -> None:
        self.processes.start("kube-controller-manager", [
            bin_path("kube", "kube-controller-manager"), *self._controller_flags(),
            f"--service-account-private-key-file={self.sa_key}", f"--root-ca-file={self.ca_file}",
            f"--service-cluster-ip-range={SERVICE_CIDR}", "--use-service-account-credentials",
            "--concurrent-gc-syncs=5", "--v=1"])
        self.processes.start("kube-scheduler", [
            bin_path("kube", "kube-scheduler"), *self._controller_flags(), "--v=1"])
        for name in ("kube-controller-manager", "kube-scheduler"):
            self.processes.wait_until(name, lambda n=name: self._holds_lease(n), STARTUP_TIMEOUT_S)
        self.processes.wait_until("kube-controller-manager", self._default_account,
                                  STARTUP_TIMEOUT_S)

    def _holds_lease(self, name: str) -> bool:
        lease = kubernetes.client.CoordinationV1Api(self.api).read_namespaced_lease(
            name, "kube-system")
        return bool(lease.spec.holder_identity)

    def _default_account(self) -> bool:
        return bool(self.core.read_namespaced_service_account("default", "default"))

    def _start_kwok(self) -> None:
        stages = component_root("kwok") / "stage"
        docs = [{"apiVersion": "config.kwok.x-k8s.io/v1alpha1", "kind": "KwokConfiguration",
                 # a config file gets no defaults: kwok's documented ones, spelled out
                 "options": {"nodeIP": HOST, "cidr": POD_CIDR, "podPlayStageParallelism": 4,
                             "nodePlayStageParallelism": 4, "nodeLeaseParallelism": 4,
                             "podsOnNodeSyncParallelism": 1, "nodeLeaseDurationSeconds": 40,
                             "enablePodsOnNodeSyncListPager": True,
                             "enablePodsOnNodeSyncStreamWatch": False}}]
        for stage in KWOK_STAGES:
            docs.extend(yaml.safe_load_all((stages / stage).read_text()))
        config = self.workdir / "kwok.yaml"
        config.write_text(yaml.safe_dump_all(docs))
        self.processes.start("kwok", [
            bin_path("kwok"), f"--kubeconfig={self.kubeconfig}", f"--config={config}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
            f"--node-ip={HOST}", f"--cidr={POD_CIDR}", "--node-lease-duration-seconds=40"])


def _http_ok(url: str) -> bool:
    import urllib.request

    with urllib.request.urlopen(url, timeout=2) as response:
        return response.status == 200
