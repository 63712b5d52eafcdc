"""A run's progress on its training job, where `kubectl` looks: the names both sides use.

The stack sets the environment (infra/workloads/jobparts/progress.py) and exports how to read it;
rank 0 reports (trainer/tracking/job_status.py). Stdlib only.

- A TrainJob (Kubeflow Trainer v2 with its ``TrainJobStatus`` feature gate): Trainer puts
  its status server's URL, CA and a token bound to the job into the trainer container
  (``TRAINER_SERVER_URL_ENV`` and the two below, Trainer v2.3.0's names); rank 0 posts
  :func:`trainer_status_request`, and ``kubectl get trainjob -o yaml`` shows it as
  ``status.trainerStatus``.
- A PyTorchJob: the stack names the job's API path (``PROGRESS_JOB_ENV``) and mounts a
  token that may patch only that job (``API_CREDENTIALS_ENV``: a folder with ``token`` and
  ``ca.crt``); rank 0 merge-patches :func:`progress_annotation` onto the job as
  ``PROGRESS_ANNOTATION``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

TRAINER_SERVER_URL_ENV = "KUBEFLOW_TRAINER_SERVER_URL"
TRAINER_SERVER_CA_ENV = "KUBEFLOW_TRAINER_SERVER_CA_CERT"
TRAINER_SERVER_TOKEN_ENV = "KUBEFLOW_TRAINER_SERVER_TOKEN"
PROGRESS_JOB_ENV = "TRAINSTACK_PROGRESS_JOB"
"""The API path of the PyTorchJob to annotate: /apis/kubeflow.org/v1/namespaces/NS/pytorchjobs/NAME."""
API_CREDENTIALS_ENV = "TRAINSTACK_API_CREDENTIALS"
"""A folder with the pod's projected ``token`` and the cluster's ``ca.crt``."""
PROGRESS_ANNOTATION = "trainstack/progress"
METRIC_NAMES = ("test_accuracy", "test_loss", "epoch")


@dataclass(frozen=True)
class JobProgress:
    """What rank 0 reports: how far the run is and what its last epoch scored."""

    percent: int  # of the run's samples (every epoch's), 0-100
    eta_seconds: int | None  # estimated from this process's pace; None before it has one
    epoch: int  # epochs done
    epochs: int
    test_accuracy: float | None  # of the last epoch done
    test_loss: float | None
    updated: str  # RFC 3339, UTC

    def metrics(self) -> dict[str, str]:
        found = {"epoch": f"{self.epoch}/{self.epochs}"}
        if self.test_accuracy is not None:
            found["test_accuracy"] = f"{self.test_accuracy:.4f}"
        if self.test_loss is not None:
            found["test_loss"] = f"{self.test_loss:.4f}"
        return found


def trainer_status_request(progress: JobProgress) -> dict[str, Any]:
    """The body Trainer v2.3.0's status server takes (UpdateTrainJobStatusRequest)."""
    status: dict[str, Any] = {
        "progressPercentage": progress.percent,
        "metrics": [{"name": name, "value": value}
                    for name, value in sorted(progress.metrics().items())],
        "lastUpdatedTime": progress.updated,
    }
    if progress.eta_seconds is not None:
        status["estimatedRemainingSeconds"] = progress.eta_seconds
    return {"trainerStatus": status}


def progress_annotation(progress: JobProgress) -> str:
    """The annotation's value: one line of JSON, the same fields as the TrainJob's status."""
    return json.dumps({"progressPercentage": progress.percent,
                       "estimatedRemainingSeconds": progress.eta_seconds,
                       **progress.metrics(), "lastUpdatedTime": progress.updated},
                      sort_keys=True)


def pytorchjob_path(namespace: str, name: str) -> str:
    return f"/apis/kubeflow.org/v1/namespaces/{namespace}/pytorchjobs/{name}"
