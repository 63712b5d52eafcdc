"""What a trainstack run looks like in MLflow: its tags, alias, artifact folder and metrics.

trainer.tracking.mlflow_run writes it, trainer.tracking.tracker hands it what to write, tests read it.
Stdlib only (no mlflow import).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from trainer.contract.schema import EpochRecord

RUN_ID_TAG = "trainstack.run_id"
MODEL_TAG = "trainstack.model_name"
VERSION_TAG = "trainstack.version"
WORLD_SIZES_TAG = "trainstack.world_sizes"
# MLflow reserves the alias "latest" (it means the highest version number, whatever
# latest.json says); this alias is the registered version trainstack's latest.json names.
ALIAS = "current"
ARTIFACT_DIR = "model"
"""Artifact folder of the published files; a registered version's source."""
EXPERIMENT_ENV = "MLFLOW_EXPERIMENT_NAME"
# The per-epoch metrics: every EpochRecord field, logged with step = epoch.
METRIC_KEYS = tuple(f.name for f in dataclasses.fields(EpochRecord) if f.name != "epoch")


@dataclass(frozen=True)
class RunInfo:
    """What MLflow is told about a trainstack run."""

    run_id: str
    model_name: str
    """``<model>-<dataset>``: the experiment's and the registered model's name."""
    params: dict[str, Any]
    """Logged once, at the MLflow run's first start (MLflow params cannot change)."""
    tags: dict[str, str] = field(default_factory=dict)
    world_size: int = 1


# Why a version is served, or only a candidate, and why a retrain trained the run.
PROMOTION_TAG = "trainstack.promotion"
RETRAIN_TAG = "trainstack.retrain"


def retrain_tags(trigger: Any) -> dict[str, str]:
    """A retrain's run: ``trainstack.retrain.{id,reason,report}`` (a RetrainTrigger)."""
    if trigger is None:
        return {}
    tags = {f"{RETRAIN_TAG}.id": trigger.id, f"{RETRAIN_TAG}.reason": trigger.reason}
    if trigger.report:
        tags[f"{RETRAIN_TAG}.report"] = trigger.report
    return tags


def promotion_tags(promotion: Any) -> dict[str, str]:
    """The gate's verdict (a Promotion): ``trainstack.promotion`` (promoted or candidate),
    ``.reason``, ``.against``, ``.candidate_acc``, ``.current_acc``, ``.split``,
    ``.reevaluated``, ``.tolerance``."""
    if promotion is None:
        return {}
    tags = {PROMOTION_TAG: promotion.decision, f"{PROMOTION_TAG}.reason": promotion.reason,
            f"{PROMOTION_TAG}.split": promotion.split,
            f"{PROMOTION_TAG}.reevaluated": str(promotion.reevaluated).lower(),
            f"{PROMOTION_TAG}.tolerance": f"{promotion.tolerance:g}"}
    if promotion.against:
        tags[f"{PROMOTION_TAG}.against"] = promotion.against
    for name in ("candidate_acc", "current_acc"):
        value = getattr(promotion, name)
        if value is not None:
            tags[f"{PROMOTION_TAG}.{name}"] = f"{value:.6f}"
    return tags
