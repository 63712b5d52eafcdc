"""Who runs in the stack's namespace: one definition per workload.

A Workload names its pods' labels, its ServiceAccount and the container ports other pods
connect to. Pod templates, Deployment selectors, Services, ServiceAccounts and the
NetworkPolicies (infra/security/fences.py) all read them from here, so a policy's selector cannot
drift from the labels of the pods it is meant to select.

An added component defines its Workload here and hands its flows to the fences
(infra/stack.py `flows`), as the MLflow server (TRACKING) does.
"""

from __future__ import annotations

from dataclasses import dataclass

PART_OF = "trainstack"
NAME_LABEL = "app.kubernetes.io/name"


def labels(name: str) -> dict[str, str]:
    """The labels of every object of a component (pods, Services, Secrets, ...)."""
    return {
        NAME_LABEL: name,
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": "pulumi",
    }


@dataclass(frozen=True)
class Port:
    """A named container port: policies and Services refer to it by name."""

    name: str
    number: int
    protocol: str = "TCP"


@dataclass(frozen=True)
class Workload:
    """The pods of one component (a Deployment's, a Job's, a PyTorchJob's replicas)."""

    name: str  # app.kubernetes.io/name of its pods, and its ServiceAccount's name
    ports: tuple[Port, ...] = ()  # what other pods may be allowed to connect to

    @property
    def labels(self) -> dict[str, str]:
        """Pod template labels; also the selector of its Deployment, Service and policy."""
        return labels(self.name)

    @property
    def service_account(self) -> str:
        return self.name

    def port(self, name: str) -> Port:
        for port in self.ports:
            if port.name == name:
                return port
        raise KeyError(f"workload {self.name} has no port named {name!r}")


# The in-cluster object store (absent with storeEndpoint).
STORE = Workload("minio", ports=(Port("api", 9000), Port("console", 9001)))
BUCKETS = Workload("trainstack-buckets")
INGEST = Workload("trainstack-ingest")
# The retrain CronJobs' pods (retrainSchedule, retrainOnDrift): they ingest, then create the
# training job through the Kubernetes API, whose pods are TRAINER's.
RETRAIN = Workload("trainstack-retrain")
# Master and Workers of the PyTorchJob; the operator adds its training.kubeflow.org/*
# labels. `pytorchjob-port` is the name the operator looks up for MASTER_PORT.
TRAINER = Workload("trainer", ports=(Port("pytorchjob-port", 23456),))
APP = Workload("inference", ports=(Port("http", 7860),))
# The MLflow tracking server (config `mlflow`): its REST API and UI.
TRACKING = Workload("mlflow", ports=(Port("http", 5000),))
