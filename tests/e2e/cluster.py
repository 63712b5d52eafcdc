"""What a cluster adds around the rendered objects, done on one machine.

The stack's rendered objects are the only source of every command line, env var and
mount: this module plays the parts Kubernetes and the Training Operator would play,
and nothing else.

- kubelet: builds a container's environment (``value``, ``secretKeyRef``,
  ``configMapKeyRef``, ``fieldRef``, ``envFrom``; ``$(VAR)`` expansion in env values,
  command and args) and materializes ``configMap``/``secret``/``emptyDir`` volumes in a
  scratch directory. A process can't see ``/etc/trainstack`` there, so each mount path
  is mapped to its scratch directory wherever it appears in the argv or env.
- cluster DNS: ``<svc>``, ``<svc>.<ns>``, ``<svc>.<ns>.svc[.cluster.local]`` with the
  Service's port become ``127.0.0.1:<local port>`` of the process standing in for it.
- Training Operator: injects ``MASTER_ADDR`` (``<job>-master-0``), ``MASTER_PORT`` (the
  Master's ``pytorchjob-port``), ``WORLD_SIZE``, ``RANK`` and ``PYTHONUNBUFFERED`` into the
  container named ``pytorch``, as training-operator v1.8 does.
- CPU limits: the kubelet enforces ``limits.cpu`` with a cgroup quota, which a local
  process can't get; each process is pinned to ``ceil(limits.cpu)`` CPUs instead (taken in
  turn from this machine's), which the trainer reads the same way (usable CPUs).
- container ports: a process can't have 7860 to itself here, so a declared
  ``containerPort`` that appears in the argv (``--port 7860``) is mapped to a free port.
- objects that exist before the stack (``existing``): a Secret the user made, which the
  stack names but never renders. The stack rendering an object of the same name is an
  error, as it would overwrite the user's.
- what stands behind an address: every pod the harness builds (its manifest, with the
  labels the template and the operator give it) and every local port it hands out for a
  container port or a Service (``pods``, ``listeners``), so a recorded connection can be
  told from which pod to which pod and container port it went (tests/e2e/traffic.py).
- ``/tmp``: a container that mounts an emptyDir there gets ``TMPDIR`` pointing at it (a
  process here cannot have the mount itself).
- volume paths: a mount path in the argv or env, also as ``sqlite:///<path>``, becomes its
  scratch directory; the MLflow image's ``mlflow`` is the tests' server (.venv-mlflow).
"""

from __future__ import annotations

import base64
import math
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.infra.infra_helpers import replica_pods
from tests.mlflow_server import server_executable
from tests.testkit import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
OPERATOR_CONTAINER = "pytorch"  # the only container the operator injects into
OPERATOR_PORT_NAME = "pytorchjob-port"
OPERATOR_DEFAULT_PORT = 23456
_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
SQLITE_URI = "sqlite:///"  # sqlite:////abs/path: a database file under a mount


class ClusterError(AssertionError):
    """The rendered objects don't fit together (what a real cluster would refuse)."""


class PodProcess(subprocess.Popen):
    """A started container: signals go to its whole process group and to the groups of
    its descendants (a tracer and the container's processes die together, as a pod's do;
    torchrun starts each worker in a session of its own)."""

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            for group in {self.pid, *_descendant_groups(self.pid)}:
                try:
                    os.killpg(group, sig)
                except ProcessLookupError:
                    pass

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


@dataclass
class Process:
    """A container, ready to start as a local process."""

    name: str  # the pod's name
    argv: list[str]
    env: dict[str, str]
    ports: dict[int, int] = field(default_factory=dict)  # containerPort -> local port
    cpus: set[int] | None = None  # the CPUs standing in for limits.cpu (None: unlimited)
    trace: list[str] | None = None  # a tracer's argv prefix (tests/e2e/traffic.py)

    def start(self, log_dir: Path) -> PodProcess:
        argv = list(self.argv)
        if self.trace:
            argv = self.trace + argv
        if self.cpus:
            # Pinned before anything starts: the tracer and the container inherit it.
            argv = ["taskset", "-c", ",".join(map(str, sorted(self.cpus))), *argv]
        # The child holds its own copy of the descriptor: close ours once it is started.
        with open(log_dir / f"{self.name}.log", "wb") as log:
            return PodProcess(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                              cwd=log_dir, start_new_session=True)


@dataclass
class LocalCluster:
    objects: dict[str, dict[str, Any]]  # rendered, keyed "Kind/name"
    workdir: Path
    service_ports: dict[tuple[str, int], int]  # (service name, service port) -> local port
    existing: dict[str, dict[str, Any]] = field(default_factory=dict)  # "Kind/name" -> object
    # A function of a pod's name giving the argv prefix that records its syscalls, or None.
    tracer: Any = None
    pods: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> Pod manifest
    listeners: dict[int, tuple[str, int]] = field(default_factory=dict)  # local port ->
    # (pod name, container port) it stands for
    _next_cpu: int = 0  # round-robin over this machine's CPUs for pinned processes

    def __post_init__(self):
        clash = sorted(set(self.objects) & set(self.existing))
        if clash:
            raise ClusterError(f"the stack renders {clash}, which already exist: it would "
                               "overwrite the user's objects")
        for (service, port), local in self.service_ports.items():
            pod, container_port = self._service_backend(service, port)
            self.listeners[local] = (pod["metadata"]["name"], container_port)

    # --- pods ----------------------------------------------------------------------
    def job_pod(self, name: str) -> dict[str, Any]:
        """The pod a Job runs (named like the Job)."""
        return self._pod(self.get("Job", name)["spec"]["template"], name,
                         self.get("Job", name)["metadata"].get("namespace", "default"))

    def deployment_pod(self, name: str, index: int = 0) -> dict[str, Any]:
        deployment = self.get("Deployment", name)
        return self._pod(deployment["spec"]["template"], f"{name}-{index}",
                         deployment["metadata"].get("namespace", "default"))

    def rendered_pods(self) -> list[dict[str, Any]]:
        """One pod of every Deployment and Job, and every replica of every PyTorchJob."""
        pods = [self.deployment_pod(d["metadata"]["name"]) for d in self.of_kind("Deployment")]
        pods += [self.job_pod(j["metadata"]["name"]) for j in self.of_kind("Job")]
        for job in self.of_kind("PyTorchJob"):
            pods += replica_pods(job)
        return pods

    def _pod(self, template: dict, name: str, namespace: str) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": namespace,
                             "labels": dict(template["metadata"].get("labels") or {})},
                "spec": template["spec"]}

    def _service_backend(self, service: str, port: int) -> tuple[dict[str, Any], int]:
        """The pod (of a Deployment) a Service port routes to, and its target port."""
        svc = self.get("Service", service)
        (entry,) = [p for p in svc["spec"]["ports"] if p["port"] == port]
        selector = svc["spec"]["selector"]
        for deployment in self.of_kind("Deployment"):
            labels = deployment["spec"]["template"]["metadata"].get("labels") or {}
            if all(labels.get(k) == v for k, v in selector.items()):
                pod = self.deployment_pod(deployment["metadata"]["name"])
                container = pod["spec"]["containers"][0]
                return pod, container_port(container, entry.get("targetPort", port))
        raise ClusterError(f"Service {service!r} selects no Deployment's pods")

    # --- lookups -----------------------------------------------------------------
    def get(self, kind: str, name: str) -> dict[str, Any]:
        key = f"{kind}/{name}"
        if key in self.objects or key in self.existing:
            return self.objects.get(key) or self.existing[key]
        raise ClusterError(f"{kind} {name!r} is referenced but neither rendered nor existing; "
                           f"the stack renders {sorted(self.objects)}")

    def _has(self, kind: str, name: str) -> bool:
        return f"{kind}/{name}" in self.objects or f"{kind}/{name}" in self.existing

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for key, o in sorted(self.objects.items()) if key.startswith(f"{kind}/")]

    def _secret_value(self, name: str, key: str) -> str:
        secret = self.get("Secret", name)
        if key in (secret.get("stringData") or {}):
            return secret["stringData"][key]
        if key in (secret.get("data") or {}):
            return base64.b64decode(secret["data"][key]).decode()
        raise ClusterError(f"Secret {name!r} has no key {key!r}")

    def _config_map_value(self, name: str, key: str) -> str:
        data = self.get("ConfigMap", name).get("data") or {}
        if key not in data:
            raise ClusterError(f"ConfigMap {name!r} has no key {key!r}")
        return data[key]

    # --- kubelet -----------------------------------------------------------------
    def _env(self, container: dict, pod_name: str, namespace: str,
             injected: dict[str, str], labels: dict[str, str]) -> dict[str, str]:
        env: dict[str, str] = {}
        for source in container.get("envFrom") or []:
            ref = source.get("secretRef") or source.get("configMapRef")
            if ref.get("optional") and not self._has(
                    "Secret" if "secretRef" in source else "ConfigMap", ref["name"]):
                continue  # as the kubelet: an optional source that does not exist adds nothing
            if "secretRef" in source:
                secret = self.get("Secret", source["secretRef"]["name"])
                env.update({k: self._secret_value(secret["metadata"]["name"], k)
                            for k in {**secret.get("data", {}), **secret.get("stringData", {})}})
            if "configMapRef" in source:
                env.update(self.get("ConfigMap", source["configMapRef"]["name"]).get("data", {}))
        env.update(injected)  # the operator's vars come before the container's own
        for var in container.get("env") or []:
            env[var["name"]] = self._env_value(var, env, pod_name, namespace, labels)
        return env

    def _env_value(self, var: dict, env: dict[str, str], pod_name: str, namespace: str,
                   labels: dict[str, str]) -> str:
        if "value" in var:
            return _expand(var["value"], env)
        ref = var.get("valueFrom") or {}
        if "secretKeyRef" in ref:
            return self._secret_value(ref["secretKeyRef"]["name"], ref["secretKeyRef"]["key"])
        if "configMapKeyRef" in ref:
            r = ref["configMapKeyRef"]
            return self._config_map_value(r["name"], r["key"])
        if "fieldRef" in ref:
            fields = {"metadata.name": pod_name, "metadata.namespace": namespace,
                      **{f"metadata.labels['{k}']": v for k, v in labels.items()}}
            return fields.get(ref["fieldRef"]["fieldPath"], "")
        raise ClusterError(f"env var {var.get('name')!r} has no value the kubelet understands")

    def _mounts(self, pod_spec: dict, container: dict, pod_dir: Path) -> dict[str, str]:
        """Materialize the container's volumes; returns mountPath -> local directory."""
        volumes = {v["name"]: v for v in pod_spec.get("volumes") or []}
        mounts = {}
        for mount in container.get("volumeMounts") or []:
            volume = volumes.get(mount["name"])
            if volume is None:
                raise ClusterError(f"volumeMount {mount['name']!r} names no volume of the pod")
            local = pod_dir / "volumes" / mount["name"]
            local.mkdir(parents=True, exist_ok=True)
            if "configMap" in volume:
                data = self.get("ConfigMap", volume["configMap"]["name"]).get("data") or {}
                _write_items(local, data, volume["configMap"].get("items"))
            elif "secret" in volume:
                name = volume["secret"]["secretName"]
                keys = {**self.get("Secret", name).get("data", {}),
                        **self.get("Secret", name).get("stringData", {})}
                data = {k: self._secret_value(name, k) for k in keys}
                _write_items(local, data, volume["secret"].get("items"))
            mounts[mount["mountPath"].rstrip("/")] = str(local)
        return mounts

    def process(self, pod: dict, *, injected: dict[str, str] | None = None,
                container_name: str | None = None) -> Process:
        """What the kubelet would start for one container of a pod (the first by default)."""
        pod_spec, pod_name = pod["spec"], pod["metadata"]["name"]
        namespace = pod["metadata"]["namespace"]
        containers = pod_spec["containers"]
        container = next((c for c in containers if c["name"] == container_name), containers[0])
        injected = injected or {}
        if container["name"] != OPERATOR_CONTAINER:
            injected = {}  # the operator only touches the container named "pytorch"
        pod_dir = self.workdir / pod_name
        env = self._env(container, pod_name, namespace, injected,
                        pod["metadata"].get("labels") or {})
        mounts = self._mounts(pod_spec, container, pod_dir)
        # A port a Service routes to is the one the Service's stand-in address names.
        routed = {pod_port: local for local, (pod, pod_port) in self.listeners.items()
                  if pod == pod_name}
        ports = {p["containerPort"]: routed.get(p["containerPort"]) or free_port()
                 for p in container.get("ports") or []}
        argv = [_expand(a, env) for a in (container.get("command") or []) + (container.get("args") or [])]
        if not argv:
            raise ClusterError(f"container {container['name']!r} of {pod_name} has no command: "
                               "the image's entrypoint would run, which does nothing useful")
        argv = [self._localize(a, mounts, ports) for a in argv]
        env = {k: self._localize(v, mounts, {}) for k, v in env.items()}
        argv[0] = _executable(argv[0])
        env["PATH"] = f"{Path(sys.executable).parent}:/usr/bin:/bin"
        # The image's code is this checkout's (the venv's editable install may be another's).
        env["PYTHONPATH"] = str(REPO_ROOT)
        env.setdefault("HOME", str(pod_dir))
        if "/tmp" in mounts:
            env.setdefault("TMPDIR", mounts["/tmp"])
        self.pods[pod_name] = pod
        self.listeners.update({local: (pod_name, port) for port, local in ports.items()})
        trace = self.tracer(pod_name) if self.tracer else None
        return Process(pod_name, argv, env, ports, self._pin(container), trace)

    def _pin(self, container: dict) -> set[int] | None:
        """CPUs for a container's ``limits.cpu`` (cgroup quota stand-in), in turn."""
        limit = ((container.get("resources") or {}).get("limits") or {}).get("cpu")
        if limit is None or not hasattr(os, "sched_setaffinity"):
            return None
        text = str(limit)
        cores = float(text[:-1]) / 1000 if text.endswith("m") else float(text)
        available = sorted(os.sched_getaffinity(0))
        count = min(len(available), max(1, math.ceil(cores)))
        chosen = {available[(self._next_cpu + i) % len(available)] for i in range(count)}
        self._next_cpu = (self._next_cpu + count) % len(available)
        return chosen

    def _localize(self, text: str, mounts: dict[str, str], ports: dict[int, int]) -> str:
        # The deepest mount that holds the path, once: a local directory may itself lie
        # under a mount path (/tmp).
        scheme = SQLITE_URI if text.startswith(SQLITE_URI) else ""
        path = text[len(scheme):]
        for mount_path in sorted(mounts, key=len, reverse=True):
            if path == mount_path or path.startswith(mount_path + "/"):
                text = scheme + mounts[mount_path] + path[len(mount_path):]
                break
        for (service, port), local_port in self.service_ports.items():
            namespace = self.get("Service", service)["metadata"].get("namespace", "default")
            for host in (f"{service}.{namespace}.svc.cluster.local", f"{service}.{namespace}.svc",
                         f"{service}.{namespace}", service):
                text = re.sub(rf"(?<![\w.-]){re.escape(host)}:{port}\b",
                              f"127.0.0.1:{local_port}", text)
        if text.isdigit() and int(text) in ports:
            text = str(ports[int(text)])
        return text

    # --- the Training Operator -----------------------------------------------------
    def pytorchjob_processes(self, job: dict) -> list[Process]:
        """Every replica of a PyTorchJob with the env the operator injects."""
        specs = job["spec"]["pytorchReplicaSpecs"]
        if "Master" not in specs:
            raise ClusterError("a PyTorchJob without a Master gets no RANK/WORLD_SIZE")
        # With the operator's labels; the Master first (rank 0).
        pods = sorted(replica_pods(job), key=lambda pod: not pod["metadata"]["name"].endswith(
            "-master-0"))
        master_port, local_port = self._master_port(specs["Master"]), free_port()
        # Cluster DNS for f"{name}-master-0": the Master's pytorchjob-port.
        self.listeners[local_port] = (pods[0]["metadata"]["name"], master_port)
        processes = []
        for rank, pod in enumerate(pods):
            injected = {
                "MASTER_ADDR": "127.0.0.1",  # cluster DNS for f"{name}-master-0"
                "MASTER_PORT": str(local_port),  # stands in for master_port
                "WORLD_SIZE": str(len(pods)),
                "RANK": str(rank),
                "PYTHONUNBUFFERED": "1",
            }
            processes.append(self.process(pod, injected=injected))
        assert master_port > 0
        return processes

    @staticmethod
    def _master_port(master_spec: dict) -> int:
        container = next((c for c in master_spec["template"]["spec"]["containers"]
                          if c["name"] == OPERATOR_CONTAINER), None)
        for port in (container or {}).get("ports") or []:
            if port.get("name") == OPERATOR_PORT_NAME:
                return port["containerPort"]
        return OPERATOR_DEFAULT_PORT


def _descendant_groups(pid: int) -> set[int]:
    """The process groups of every descendant of `pid` (from /proc; empty elsewhere)."""
    children: dict[int, list[tuple[int, int]]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid, pgrp = stat.read_text().rsplit(")", 1)[1].split()[1:3]
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        children.setdefault(int(ppid), []).append((int(stat.parent.name), int(pgrp)))
    groups, frontier = set(), [pid]
    while frontier:
        for child, group in children.get(frontier.pop(), []):
            groups.add(group)
            frontier.append(child)
    return groups


def container_port(container: dict, port: int | str) -> int:
    """A probe's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    for declared in container.get("ports") or []:
        if declared.get("name") == port:
            return declared["containerPort"]
    raise ClusterError(f"container {container['name']!r} declares no port named {port!r}")


def _expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: defined vars are substituted, others left as written."""
    return _VAR_REF.sub(lambda m: env.get(m.group(1), m.group(0)), text)


def _write_items(directory: Path, data: dict[str, str], items: list[dict] | None) -> None:
    paths = {i["key"]: i["path"] for i in items} if items else {k: k for k in data}
    for key, rel in paths.items():
        if key not in data:
            raise ClusterError(f"volume item {key!r} is not in the object's data")
        (directory / rel).parent.mkdir(parents=True, exist_ok=True)
        (directory / rel).write_text(data[key])


def _executable(name: str) -> str:
    """The image's `python`/`torchrun` are this venv's; the MLflow image's `mlflow` server is
    the tests' (.venv-mlflow: this venv has only the client)."""
    if name in ("python", "python3"):
        return sys.executable
    if name == "mlflow":
        return str(server_executable())
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else (shutil.which(name) or name)
