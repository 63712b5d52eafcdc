"""The MLflow calls of trainer.tracking.tracker (the only module that imports mlflow).

What they write is defined in trainer.contract.reporting.mlflow_layout.

An MLflow run belongs to one trainstack run (tag ``trainstack.run_id``) in the experiment
``<model>-<dataset>`` (or ``MLFLOW_EXPERIMENT_NAME``). Its published versions are
registered as model ``<model>-<dataset>`` with the tag ``trainstack.version``; the alias
:data:`ALIAS` follows ``latest.json``. Every step here is safe to repeat.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag, ViewType
from mlflow.exceptions import MlflowException

from trainer.contract.errors import MetaError
from trainer.contract.layout import META_FILE, is_safe_relative
from trainer.contract.reporting.mlflow_layout import (
    ALIAS,
    ARTIFACT_DIR,
    EXPERIMENT_ENV,
    MODEL_TAG,
    RUN_ID_TAG,
    VERSION_TAG,
    WORLD_SIZES_TAG,
    RunInfo,
    promotion_tags,
)
from trainer.contract.schema import VersionMeta

log = logging.getLogger(__name__)

# log_batch accepts at most 1000 metrics and 100 params or tags per request.
BATCH_METRICS, BATCH_PARAMS = 1000, 100
ALIAS_ATTEMPTS = 5


def _code(error: MlflowException) -> str:
    return str(getattr(error, "error_code", ""))


class MlflowRuns:
    """One tracking server (its URI also serves the model registry)."""

    def __init__(self, uri: str):
        self.client = MlflowClient(tracking_uri=uri, registry_uri=uri)

    # Runs ---------------------------------------------------------------------------
    def experiment_id(self, name: str) -> str:
        experiment = self.client.get_experiment_by_name(name)
        if experiment is None:
            try:
                return self.client.create_experiment(name)
            except MlflowException as e:  # created by another run meanwhile
                if "RESOURCE_ALREADY_EXISTS" not in _code(e):
                    raise
                experiment = self.client.get_experiment_by_name(name)
        if experiment.lifecycle_stage != "active":
            raise MlflowException(f"experiment {name!r} is deleted in MLflow: restore it "
                                  f"(or set {EXPERIMENT_ENV}) to track this run")
        return experiment.experiment_id

    def open_run(self, info: RunInfo, *, known: str | None, resuming: bool,
                 version: str | None = None) -> tuple[str, str]:
        """The MLflow run of ``info``: ``known`` (from the checkpoint) if it is still there,
        else one found by its tag, else a new one. A fresh start (``resuming`` false) only
        takes over a run that logged no epoch (one whose first attempt died before its
        first checkpoint); a later retraining of the same run gets a run of its own."""
        run = self._known_run(known, info) if known else None
        if run is None:
            experiment = self.experiment_id(os.environ.get(EXPERIMENT_ENV) or info.model_name)
            run = self._find_run(experiment, info, resuming=resuming, version=version)
            if run is None:
                run = self.client.create_run(experiment, run_name=info.run_id,
                                             tags={RUN_ID_TAG: info.run_id})
                log.info("MLflow run %s created for run %s", run.info.run_id, info.run_id)
        self._describe(run, info)
        return run.info.run_id, run.info.experiment_id

    def _known_run(self, run_id: str, info: RunInfo):
        try:
            run = self.client.get_run(run_id)
        except MlflowException as e:
            if "RESOURCE_DOES_NOT_EXIST" not in _code(e):
                raise
            run = None
        if (run is None or run.info.lifecycle_stage != "active"
                or run.data.tags.get(RUN_ID_TAG) != info.run_id):
            log.warning("MLflow run %s of the checkpoint is gone (deleted?): looking for "
                        "another one of run %s", run_id, info.run_id)
            return None
        return run

    def _find_run(self, experiment: str, info: RunInfo, *, resuming: bool,
                  version: str | None):
        runs = self.client.search_runs(
            [experiment], filter_string=f"tags.`{RUN_ID_TAG}` = '{info.run_id}'",
            run_view_type=ViewType.ACTIVE_ONLY, order_by=["attributes.start_time DESC"],
            max_results=100)
        if version is not None:
            for run in runs:
                if run.data.tags.get(VERSION_TAG) == version:
                    return run
        unpublished = [run for run in runs if VERSION_TAG not in run.data.tags]
        if not resuming:
            unpublished = [run for run in unpublished if not run.data.metrics]
        return unpublished[0] if unpublished else None

    def _describe(self, run, info: RunInfo) -> None:
        """Params the run lacks (MLflow params never change: a resume keeps the first
        start's values) and the trainstack tags. The world sizes are added by
        :meth:`note_world_size` once an epoch trained with one."""
        params = [Param(key, str(value)) for key, value in info.params.items()
                  if key not in run.data.params]
        tags = {**info.tags, RUN_ID_TAG: info.run_id, MODEL_TAG: info.model_name}
        tag_list = [RunTag(k, v) for k, v in tags.items() if run.data.tags.get(k) != v]
        for i in range(0, max(len(params), len(tag_list)), BATCH_PARAMS):
            self.client.log_batch(run.info.run_id, params=params[i:i + BATCH_PARAMS],
                                  tags=tag_list[i:i + BATCH_PARAMS])

    def note_world_size(self, run_id: str, world_size: int, *, only_if_none: bool = False) -> None:
        """Add ``world_size`` to the run's :data:`WORLD_SIZES_TAG` (``2,1``: trained with 2
        processes, then 1) unless it is the last one named; ``only_if_none``: only where the
        tag names none yet (a run first reported at its publication)."""
        tags = self.client.get_run(run_id).data.tags
        sizes = [size for size in tags.get(WORLD_SIZES_TAG, "").split(",") if size]
        if (sizes and only_if_none) or (sizes and sizes[-1] == str(world_size)):
            return
        self.client.set_tag(run_id, WORLD_SIZES_TAG, ",".join([*sizes, str(world_size)]))

    # Metrics ------------------------------------------------------------------------
    def logged_steps(self, run_id: str, keys: tuple[str, ...]) -> set[tuple[str, int]]:
        return {(key, metric.step) for key in keys
                for metric in self.client.get_metric_history(run_id, key)}

    def log_metrics(self, run_id: str, items: list[tuple[str, float, int, int]]) -> None:
        """``(key, value, timestamp_ms, step)`` each."""
        metrics = [Metric(key, float(value), stamp, step) for key, value, stamp, step in items]
        for i in range(0, len(metrics), BATCH_METRICS):
            self.client.log_batch(run_id, metrics=metrics[i:i + BATCH_METRICS])

    # Publication --------------------------------------------------------------------
    def publish(self, run_id: str, info: RunInfo, version: str, files: dict[str, bytes],
                latest: Callable[[], str | None]) -> None:
        """Artifacts, the version tag, the registered version, the alias, the run's end."""
        run = self.client.get_run(run_id)
        # One run publishes one version (trainer.store.lease). Should a second version reach the
        # same MLflow run anyway, its files go to a folder of their own and the run's tag
        # keeps naming the first: every registered version points at its own files.
        first = run.data.tags.get(VERSION_TAG)
        folder_name = ARTIFACT_DIR if first in (None, version) else f"{ARTIFACT_DIR}-{version}"
        with tempfile.TemporaryDirectory(prefix="trainstack-mlflow-") as tmp:
            folder = Path(tmp) / folder_name
            for rel, data in files.items():
                if not is_safe_relative(rel):
                    raise ValueError(f"{rel!r} is not a safe artifact path")
                (folder / rel).parent.mkdir(parents=True, exist_ok=True)
                (folder / rel).write_bytes(data)
            self.client.log_artifacts(run_id, str(folder), artifact_path=folder_name)
        if first is None:
            self.client.set_tag(run_id, VERSION_TAG, version)
        if first in (None, version):  # the run's own version (a repeat sets the same tags)
            self._tag_promotion(run_id, files.get(META_FILE))
        registered = self._register(info, run, version, folder_name)
        log.info("MLflow: version %s of %s registered as %s/%s", version, info.model_name,
                 info.model_name, registered)
        self.follow_latest(info.model_name, latest)
        self.client.set_terminated(run_id, "FINISHED")

    def _tag_promotion(self, run_id: str, meta_bytes: bytes | None) -> None:
        """The promotion gate's verdict on the run's version, as tags: why it is served, or
        only a candidate (both accuracies, the split)."""
        try:
            promotion = VersionMeta.from_json(meta_bytes).promotion if meta_bytes else None
        except MetaError:
            return
        tags = [RunTag(k, v) for k, v in promotion_tags(promotion).items()]
        if tags:
            self.client.log_batch(run_id, tags=tags)

    def _versions_tagged(self, name: str, version: str) -> list[Any]:
        return list(self.client.search_model_versions(
            f"name = '{name}' and tags.`{VERSION_TAG}` = '{version}'"))

    def _register(self, info: RunInfo, run, version: str, folder_name: str) -> str:
        name = info.model_name
        try:
            self.client.create_registered_model(name)
        except MlflowException as e:
            if "RESOURCE_ALREADY_EXISTS" not in _code(e):
                raise
        found = self._versions_tagged(name, version)
        if found:  # registered by an earlier attempt
            return found[0].version
        created = self.client.create_model_version(
            name, f"{run.info.artifact_uri}/{folder_name}", run_id=run.info.run_id,
            tags={VERSION_TAG: version, RUN_ID_TAG: info.run_id},
            await_creation_for=0)  # a tracking server's versions are READY at once
        return created.version

    def follow_latest(self, name: str, latest: Callable[[], str | None]) -> None:
        """Point :data:`ALIAS` at the registered version of what latest.json names; read
        latest.json again after moving it, so a run that publishes meanwhile cannot leave
        the alias behind (each publisher repeats this, the last one's answer stands)."""
        for _ in range(ALIAS_ATTEMPTS):
            target = latest()
            if target is None:
                return
            found = self._versions_tagged(name, target)
            if not found:
                log.info("MLflow: latest.json names %s, which is not registered: alias %r "
                         "of %s unchanged", target, ALIAS, name)
                return
            self.client.set_registered_model_alias(name, ALIAS, found[0].version)
            if latest() == target:
                return
