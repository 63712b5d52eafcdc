"""What rank 0 tells the world about a run while it trains: the call points of the loop.

Two readers: the progress record in the store (``models/<name>/progress/<run_id>.json``,
trainer.contract.reporting.progress.RunProgress; always written, the app's Training tab reads it) and, with ``MLFLOW_TRACKING_URI`` set, an MLflow run (trainer.tracking.tracker). The loop calls
:meth:`RunReporter.started` once the state is resumed, :meth:`RunReporter.epoch_ended`
after each epoch's checkpoint and :meth:`RunReporter.published` once the version is
published (latest.json moved or not). Where the pod says how, the training job itself
shows the run's progress too (trainer.tracking.job_status: ``kubectl get``), from each
step (:meth:`RunReporter.progressed`). No reader can stop training: a failure is a
warning. Other ranks get a reporter that does nothing.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from trainer.contract.config import RunIdentity, TrainConfig
from trainer.contract.errors import MetaError, ObjectNotFound, TrainstackError
from trainer.contract.layout import META_FILE, METRICS_FILE, ModelKeys
from trainer.contract.reporting import mlflow_layout
from trainer.contract.reporting.progress import RunProgress
from trainer.contract.schema import EpochRecord, VersionMeta, VersionMetrics
from trainer.limits.cpus import usable_cpus
from trainer.limits.memlimit import memory_limit_bytes
from trainer.store import Store
from trainer.tracking import job_status
from trainer.tracking import tracker as tracking

if TYPE_CHECKING:
    from trainer.state.checkpoint import TrainingState

log = logging.getLogger(__name__)


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pod_resources() -> dict[str, int]:
    """What this process may use: CPUs (affinity and cgroup quota), memory, GPUs."""
    import torch

    return {"cpus": usable_cpus(), "memory_bytes": memory_limit_bytes(),
            "gpus": torch.cuda.device_count() if torch.cuda.is_available() else 0}


def run_params(cfg: TrainConfig, world_size: int, resources: dict[str, int]) -> dict[str, Any]:
    """MLflow params: every TrainConfig key as configured, the recipe it resolves to
    (``recipe.<field>``: what "auto" meant for this model), the world size and the pod's
    resources."""
    recipe = {f"recipe.{key}": value for key, value in dataclasses.asdict(cfg.recipe).items()}
    return {**cfg.to_dict(), **recipe, "world_size": world_size, **resources}


class RunReporter:
    """Rank 0's reporter of one run (see the module docstring)."""

    def __init__(self, store: Store, cfg: TrainConfig, run_id: str, world_size: int,
                 tracker: tracking.Tracker | None, clock=utc_now,
                 job: job_status.JobStatus | None = None):
        self.store, self.cfg, self.run_id, self.world_size = store, cfg, run_id, world_size
        self.keys = ModelKeys(cfg.model_name)
        self.tracker, self.clock, self.job = tracker, clock, job
        self._started_at: str | None = None

    # The loop's call points ---------------------------------------------------------
    def started(self, state: TrainingState) -> None:
        """After resuming (``state.epoch`` epochs done): the progress record, the MLflow run
        (the record again once MLflow named it)."""
        self._write_progress(state.history)
        self._job_epoch(state.history)
        if self.tracker is not None:
            self.tracker.start(state.mlflow_run_id, list(state.history))
            state.mlflow_run_id = self.tracker.run_id or state.mlflow_run_id
            if self.tracker.run_id is not None:
                self._write_progress(state.history)

    def epoch_ended(self, state: TrainingState) -> None:
        """After the epoch's checkpoint: a run id MLflow handed out meanwhile goes into
        ``state`` (so the next checkpoint carries it)."""
        if self.tracker is not None:
            self.tracker.epoch_ended(list(state.history))
            state.mlflow_run_id = self.tracker.run_id or state.mlflow_run_id
        self._write_progress(state.history)
        self._job_epoch(state.history)

    def progressed(self, fraction: float) -> None:
        """After each step: ``fraction`` of the run's samples are trained (no I/O here)."""
        if self.job is not None:
            self.job.progressed(fraction)

    def interrupted(self, state: TrainingState) -> None:
        """Stopped by Ctrl-C (trainer.run.stopping): the record says so until the run resumes."""
        self._write_progress(state.history, stopped="interrupted")
        self._job_closed()

    def failed(self, state: TrainingState) -> None:
        """Stopped by an error: the record says so until a restart of the job resumes it."""
        self._write_progress(state.history, stopped="failed")
        self._job_closed()

    def published(self, version: str) -> None:
        """After publication (also when a restart finds the run already published)."""
        try:
            history = VersionMetrics.from_json(
                self.store.get_bytes(self.keys.version_file(version, METRICS_FILE))).epochs
        except (TrainstackError, MetaError) as e:
            log.warning("version %s: its metrics cannot be read for the run's report (%s)",
                        version, e)
            return
        if self.tracker is not None:
            self.tracker.published(version, history, files=lambda: self._artifacts(version),
                                   latest=self._latest_version)
        self._write_progress(history, version=version)
        self._job_epoch(history)
        self._job_closed()

    # Helpers ------------------------------------------------------------------------
    def _job_epoch(self, history: list[EpochRecord]) -> None:
        if self.job is not None and history:
            self.job.epoch_ended(history[-1].epoch, history[-1])

    def _job_closed(self) -> None:
        if self.job is not None:
            self.job.close()
            self.job = None
    def _artifacts(self, version: str) -> dict[str, bytes]:
        """meta.json and every file it lists (model.pt2, metrics.json, the figures)."""
        meta_bytes = self.store.get_bytes(self.keys.meta(version))
        meta = VersionMeta.from_json(meta_bytes)
        files = {rel: self.store.get_bytes(self.keys.version_file(version, rel))
                 for rel in meta.files}
        return {META_FILE: meta_bytes, **files}

    def _latest_version(self) -> str | None:
        from trainer.publish.latest import latest_version

        return latest_version(self.store, self.cfg.model_name)

    def _started_at_value(self) -> str:
        """When the run first started: kept from its earlier progress record, if any."""
        if self._started_at is None:
            try:
                previous = RunProgress.from_json(self.store.get_bytes(self.keys.progress(
                    self.run_id)))
                self._started_at = previous.started_at
            except (ObjectNotFound, MetaError):
                self._started_at = self.clock()
        return self._started_at

    def _write_progress(self, history: list[EpochRecord], version: str | None = None,
                        stopped: str | None = None) -> None:
        epoch = history[-1].epoch if history else 0
        state = ("published" if version is not None else stopped if stopped
                 else "publishing" if epoch >= self.cfg.epochs else "training")
        tracker = self.tracker
        try:
            record = RunProgress(
                run_id=self.run_id, model=self.cfg.model, dataset=self.cfg.resolved_dataset_name,
                state=state, epoch=epoch, epochs=self.cfg.epochs, world_size=self.world_size,
                started_at=self._started_at_value(), updated_at=self.clock(),
                history=list(history), version=version,
                mlflow_run_id=tracker.run_id if tracker else None,
                mlflow_experiment_id=tracker.experiment_id if tracker else None,
                mlflow_url=tracker.run_url() if tracker else None, retrain=self.cfg.retrain)
            self.store.put_bytes(self.keys.progress(self.run_id), record.to_json())
        except TrainstackError as e:  # informational: never worth stopping training for
            log.warning("progress record of run %s not written: %s", self.run_id, e)


class SilentReporter:
    """Every rank but 0: nothing to report."""

    def started(self, state: TrainingState) -> None:
        return None

    def epoch_ended(self, state: TrainingState) -> None:
        return None

    def progressed(self, fraction: float) -> None:
        return None

    def interrupted(self, state: TrainingState) -> None:
        return None

    def failed(self, state: TrainingState) -> None:
        return None

    def published(self, version: str) -> None:
        return None


def open_reporter(store: Store, identity: RunIdentity, *, is_main: bool,
                  world_size: int) -> RunReporter | SilentReporter:
    """Rank 0's reporter of the run (with an MLflow tracker when MLFLOW_TRACKING_URI is set)."""
    if not is_main:
        return SilentReporter()
    cfg, uri, tracker = identity.config, tracking.tracking_uri(), None
    if uri is not None:
        tags = {f"trainstack.{key}": value for key, value in identity.to_dict().items()}
        tags.update(mlflow_layout.retrain_tags(cfg.retrain))
        info = mlflow_layout.RunInfo(run_id=identity.run_id, model_name=cfg.model_name,
                                params=run_params(cfg, world_size, pod_resources()),
                                tags=tags, world_size=world_size)
        tracker = tracking.Tracker(info, uri)
    return RunReporter(store, cfg, identity.run_id, world_size, tracker,
                       job=job_status.open_job_status(cfg.epochs))
