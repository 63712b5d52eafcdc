"""The retrain pod's few calls to the Kubernetes API, under its own ServiceAccount.

Its Role (infra/workloads/retrain.py) allows exactly these: get Jobs (its own, to find
the CronJob that owns it and when it was made; another retrain's, to tell whether it still
runs) and create, get, list and delete the one training job kind of the stack. In a pod
the client reads the mounted ServiceAccount token; elsewhere (tests, a person's shell)
``KUBECONFIG``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from trainer.contract.errors import TrainstackError
from trainer.contract.lifecycle.retrain import MODEL_LABEL, TRAINING_KINDS
from trainer.retrain.jobs import Owner, ended

log = logging.getLogger(__name__)

# kubectl create job --from=cronjob/... marks the Job it makes with this annotation.
MANUAL_ANNOTATION = "cronjob.kubernetes.io/instantiate"


class RetrainError(TrainstackError):
    """A retrain cannot start: the message says why and what to do."""


@dataclass(frozen=True)
class Origin:
    """The retrain pod's own Job."""

    name: str
    uid: str
    created: datetime
    owner: Owner | None
    manual: bool
    """Made by a person (kubectl create job --from=cronjob/...), not by the schedule."""

    @property
    def retrain_id(self) -> str:
        """When the Job was made, and who: the same for every restart of its pod."""
        return f"{self.created.strftime('%Y%m%dT%H%M%SZ')}-{self.uid.replace('-', '')[:6]}"


def _client() -> Any:
    import kubernetes

    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()
    return kubernetes.client.ApiClient()


class Cluster:
    """The namespace's Jobs and training jobs, as the retrain pod may see them."""

    def __init__(self, namespace: str, kind: str, api: Any = None):
        import kubernetes

        if kind not in TRAINING_KINDS:
            raise RetrainError(f"training job kind {kind!r}: one of {', '.join(TRAINING_KINDS)}")
        self.namespace, self.kind = namespace, kind
        self.group, self.version, self.plural = TRAINING_KINDS[kind]
        self.api = api or _client()
        self.batch = kubernetes.client.BatchV1Api(self.api)
        self.custom = kubernetes.client.CustomObjectsApi(self.api)
        self.ApiException = kubernetes.client.ApiException

    def origin(self, job_name: str) -> Origin:
        job = self.batch.read_namespaced_job(job_name, self.namespace)
        owners = [o for o in job.metadata.owner_references or [] if o.kind == "CronJob"]
        owner = (Owner(owners[0].api_version, owners[0].kind, owners[0].name, owners[0].uid)
                 if owners else None)
        annotations = job.metadata.annotations or {}
        created = job.metadata.creation_timestamp.astimezone(UTC)
        return Origin(job_name, job.metadata.uid, created, owner,
                      annotations.get(MANUAL_ANNOTATION) == "manual")

    def job_running(self, job_name: str) -> bool:
        """Whether the batch Job ``job_name`` exists and has not ended."""
        try:
            job = self.batch.read_namespaced_job(job_name, self.namespace)
        except self.ApiException as e:
            if e.status == 404:
                return False
            raise
        done = {c.type for c in job.status.conditions or [] if c.status == "True"}
        return not done & {"Complete", "Failed"}

    def create(self, body: dict[str, Any]) -> bool:
        """Create the training job; False when this retrain created it before (a restart)."""
        try:
            self.custom.create_namespaced_custom_object(
                self.group, self.version, self.namespace, self.plural, body)
            return True
        except self.ApiException as e:
            if e.status != 409:
                raise
        existing = self.get(body["metadata"]["name"])
        labels = (existing or {}).get("metadata", {}).get("labels") or {}
        if existing is None or any(labels.get(k) != v
                                   for k, v in body["metadata"]["labels"].items()):
            raise RetrainError(f"{self.kind} {body['metadata']['name']} exists and is not this "
                               "retrain's: delete it, then start the retrain again")
        return False

    def get(self, name: str) -> dict[str, Any] | None:
        try:
            return self.custom.get_namespaced_custom_object(
                self.group, self.version, self.namespace, self.plural, name)
        except self.ApiException as e:
            if e.status == 404:
                return None
            raise

    def training(self, name: str) -> bool:
        """Whether the training job ``name`` exists and has not ended."""
        job = self.get(name)
        return job is not None and ended(job) is None

    def prune(self, model_name: str, keep: int, current: str) -> list[str]:
        """Delete this model's ended retrain training jobs but the newest ``keep`` (and
        ``current``); their pods go with them. Returns the names deleted."""
        listed = self.custom.list_namespaced_custom_object(
            self.group, self.version, self.namespace, self.plural,
            label_selector=f"{MODEL_LABEL}={model_name}")["items"]
        done = sorted((j for j in listed if ended(j) is not None
                       and j["metadata"]["name"] != current),
                      key=lambda j: j["metadata"]["creationTimestamp"], reverse=True)
        deleted = []
        for job in done[keep:]:
            meta = job["metadata"]
            try:
                self.custom.delete_namespaced_custom_object(
                    self.group, self.version, self.namespace, self.plural, meta["name"],
                    propagation_policy="Background",
                    body={"preconditions": {"uid": meta["uid"]}})
                deleted.append(meta["name"])
            except self.ApiException as e:
                if e.status not in (404, 409):
                    raise
        return deleted
