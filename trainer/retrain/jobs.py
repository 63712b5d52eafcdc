"""A retrain's training job: the stack's manifest made into one object, and its end read back.

The stack renders its own training job (PyTorchJob or TrainJob) into the retrain manifest
(trainer.contract.lifecycle.retrain.RetrainManifest); a retrain names it, labels it, makes the
CronJob that started the retrain its owner (so deleting the CronJob, as `pulumi destroy`
does, deletes it and its pods) and appends the retrain's arguments to the training command.
Workers, resources, image and pod template stay the stack's.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from typing import Any

from trainer.contract.lifecycle.retrain import (
    ID_LABEL,
    MODEL_LABEL,
    RetrainManifest,
    RetrainTrigger,
)

# The container the training operators run the trainer in (v1 "pytorch", v2 "node").
TRAINING_CONTAINERS = ("pytorch", "node")
# Terminal conditions: the Training Operator's (v1) and Kubeflow Trainer's (v2).
SUCCEEDED = ("Succeeded", "Complete")
FAILED = ("Failed",)


@dataclass(frozen=True)
class Owner:
    """The CronJob a retrain's Job was made from (its ownerReference)."""

    api_version: str
    kind: str
    name: str
    uid: str

    def reference(self) -> dict[str, Any]:
        # No blockOwnerDeletion: setting it needs update on the CronJob's finalizers where
        # the API server enforces owner permissions; the garbage collector deletes the
        # training job after its owner either way.
        return {"apiVersion": self.api_version, "kind": self.kind, "name": self.name,
                "uid": self.uid, "controller": False}


def job_name(manifest: RetrainManifest, retrain_id: str) -> str:
    """``<prefix>-<8 hex of the retrain id>``: one name per retrain, the same on a restart
    of its pod (so a restarted retrain finds the job it made)."""
    return f"{manifest.prefix}-{hashlib.sha256(retrain_id.encode()).hexdigest()[:8]}"


def training_job(manifest: RetrainManifest, trigger: RetrainTrigger, owner: Owner,
                 namespace: str) -> dict[str, Any]:
    """The training job of one retrain, ready to create."""
    job = copy.deepcopy(manifest.job)
    meta = job.setdefault("metadata", {})
    meta.update(name=job_name(manifest, trigger.id), namespace=namespace,
                ownerReferences=[owner.reference()])
    meta.setdefault("labels", {}).update({MODEL_LABEL: manifest.name, ID_LABEL: trigger.id})
    args = ["--retrain-id", trigger.id, "--retrain-reason", trigger.reason]
    if trigger.report:
        args += ["--retrain-report", trigger.report]
    commands = list(training_commands(job))
    if not commands:
        raise ValueError(f"the retrain manifest's {job.get('kind')} has no training container "
                         f"({' or '.join(TRAINING_CONTAINERS)}) with a command")
    for command in commands:
        command.extend(args)
    return job


def training_commands(job: dict[str, Any]):
    """The command lists of every training container of ``job`` (to extend in place)."""
    spec = job.get("spec", {})
    if job.get("kind") == "TrainJob":
        trainer = spec.get("trainer", {})
        if isinstance(trainer.get("command"), list):
            yield trainer["command"]
        return
    for replica in spec.get("pytorchReplicaSpecs", {}).values():
        for container in replica.get("template", {}).get("spec", {}).get("containers", []):
            if container.get("name") in TRAINING_CONTAINERS and isinstance(
                    container.get("command"), list):
                yield container["command"]


def ended(job: dict[str, Any]) -> tuple[bool, str] | None:
    """``(succeeded, message)`` once the training job has ended, else None."""
    for condition in job.get("status", {}).get("conditions", []) or []:
        if condition.get("status") != "True":
            continue
        kind = condition.get("type")
        if kind in SUCCEEDED or kind in FAILED:
            message = condition.get("message") or condition.get("reason") or kind
            return kind in SUCCEEDED, f"{job.get('kind')} {kind.lower()}: {message}"
    return None
