"""The one list of checkov checks the stack does not pass, each with its reason.

tests/infra/security/test_infra_checkov.py fails on any failed check that no entry here covers, and
on an entry that covers no failure (a skip outlives its reason). docs/security.md
("What the policy scan skips") says what each one means for an operator; a test keeps
every check id here named there.

An entry covers a failed check when the check id matches, the resource matches (checkov's
id, `Kind.namespace.name`, or the Dockerfile's path), and the scanned configuration is
one of `configs` (empty: every configuration).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Everything that runs the trainer image (the PyTorchJob's replicas, a TrainJob's nodes are
# scanned as Pods).
TRAINING_PODS = r"Pod\.[^.]+\.train-.*-((master|worker)-\d+|node-0-\d+)"
TRAINER_IMAGE_PODS = (r"(Job\.[^.]+\.trainstack-(buckets|ingest-\w+)"
                      r"|CronJob\.[^.]+\.trainstack-retrain(-drift)?"
                      rf"|Deployment\.[^.]+\.inference|{TRAINING_PODS})")


@dataclass(frozen=True)
class Skip:
    check: str
    resources: str  # a regex, matched against the whole resource id
    reason: str
    configs: tuple[str, ...] = ()

    def covers(self, check: str, resource: str, config: str) -> bool:
        return (check == self.check and re.fullmatch(self.resources, resource) is not None
                and (not self.configs or config in self.configs))


SKIPS = (
    Skip("CKV_K8S_35", TRAINER_IMAGE_PODS,
         "The workloads' S3 credentials (and the app's access token) are env vars set by "
         "secretKeyRef: the project's workload contract, and what the S3 clients read. The "
         "values never appear in a spec, a ConfigMap or the YAML. A file mount would not "
         "keep them from the container's own processes either; MinIO, which can, reads its "
         "root credentials as files."),
    Skip("CKV_K8S_8", TRAINING_PODS,
         "Training pods serve no endpoint a liveness probe could ask. A hung collective ends "
         "the process after the trainer's collective timeout (TRAINSTACK_DIST_TIMEOUT_S) and "
         "the operator restarts the pod (restartPolicy OnFailure; a TrainJob's JobSet restarts "
         "every rank)."),
    Skip("CKV_K8S_9", TRAINING_PODS,
         "Training pods serve nothing a readiness probe could ask, and the operator's "
         "per-replica headless Service publishes only ready pods: a probe the trainer cannot "
         "answer would hide the Master's address from the Workers' rendezvous."),
    Skip("CKV_K8S_15", TRAINER_IMAGE_PODS,
         "pushImage false (minikube): the image is built into the node's own Docker and "
         "exists in no registry, so imagePullPolicy is Never; Always would fail every pull. "
         "Pushed and prebuilt images are referenced by digest (a digest never moves).",
         configs=("single",)),
    Skip("CKV_K8S_43", TRAINER_IMAGE_PODS,
         "pushImage false (minikube): an image that was never pushed has no registry digest; "
         "its tag is unique per build (a hash of the sources).", configs=("single",)),
    Skip("CKV_K8S_43", r"Deployment\.[^.]+\.mlflow",
         "The default MLflow server image (ghcr.io/mlflow/mlflow:v<release>-full) is pinned "
         "by its release tag, pulled Always: its digest could not be looked up where the "
         "stack was written (no registry access). Set mlflowImage to that image by digest "
         "(docker buildx imagetools inspect ...) and the check passes, as in the "
         "configurations scanned with one.", configs=("cpu", "gpu", "single")),
    Skip("CKV_DOCKER_2", r".*trainer/Dockerfile\.?",
         "No HEALTHCHECK in the image: Kubernetes ignores Docker's HEALTHCHECK (the pods' "
         "probes do that job), and the one image also runs batch Jobs and training, for which "
         "an HTTP check would report 'unhealthy'."),
)
