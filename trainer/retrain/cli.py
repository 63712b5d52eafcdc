"""``python -m trainer retrain``: what the retrain CronJob's pod runs, start to end.

1. Who am I: the pod's Job (downward API) and the CronJob that owns it; the retrain's id is
   the Job's creation time and uid, the same for every restart of its pod. Why: a person
   (``kubectl create job --from=cronjob/...``), the schedule, or, with ``--if-drift``, drift
   (and nothing happens unless the newest K drift checks of the served version found drift
   and the cooldown has passed).
2. Take the model's retrain slot: while another retrain trains, this one ends at once
   (recorded as skipped) and trains nothing.
3. Ingest ``--source`` again, when given: new data is picked up, unchanged data is not
   uploaded twice (the ingest compares digests).
4. Create the training job from the stack's manifest, owned by the CronJob, and wait until
   it ends (so the CronJob's ``concurrencyPolicy: Forbid`` covers the whole retrain).
5. Record how it ended, release the slot, delete this model's ended retrain jobs but the
   newest few.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import time
from pathlib import Path

from trainer.contract.config import DATASETS
from trainer.contract.env import DATASET_SOURCE_ENV, NAMESPACE_ENV, RETRAIN_JOB_ENV
from trainer.contract.errors import ConfigError, TrainstackError
from trainer.contract.lifecycle.retrain import (
    DRIFT,
    FAILED,
    FINISHED,
    PERSON,
    SCHEDULE,
    SKIPPED,
    TIME_FORMAT,
    TRAINING,
    RetrainManifest,
    RetrainSlot,
    RetrainTrigger,
)
from trainer.retrain import drift, jobs
from trainer.retrain.cluster import Cluster, RetrainError
from trainer.retrain.slot import Records, Slot
from trainer.store import open_store

log = logging.getLogger(__name__)

DEFAULT_WINDOWS = 3
DEFAULT_COOLDOWN = "24h"
DEFAULT_KEEP = 3
POLL_S = 30.0


def add_retrain_parser(sub, store_help: str) -> None:
    retrain = sub.add_parser(
        "retrain", help="the retrain CronJob's command: ingest again, train a new run, "
                        "publish through the promotion gate",
        description="Run in a Job made from the stack's retrain CronJob (its pod needs "
                    f"${RETRAIN_JOB_ENV} and ${NAMESPACE_ENV}): creates the training job the "
                    "manifest describes, owned by the CronJob, and waits for it.")
    retrain.add_argument("--store", help=store_help)
    retrain.add_argument("--manifest", required=True, type=Path,
                         help="the training job's manifest the stack mounts (JSON)")
    retrain.add_argument("--dataset", choices=DATASETS, help="ingest it again first")
    source = retrain.add_mutually_exclusive_group()
    source.add_argument("--source", help="the dataset's URL or path (as `ingest --source`)")
    source.add_argument("--source-env", metavar="VAR",
                        help=f"read it from VAR instead (the stack's {DATASET_SOURCE_ENV})")
    retrain.add_argument("--if-drift", action="store_true",
                         help="retrain only when the newest --drift-windows drift checks of "
                              "the served version all found drift (and --cooldown passed)")
    retrain.add_argument("--drift-windows", type=int, default=DEFAULT_WINDOWS,
                         help=f"drift checks in a row [{DEFAULT_WINDOWS}]")
    retrain.add_argument("--cooldown", default=DEFAULT_COOLDOWN,
                         help=f"least time between two drift retrains [{DEFAULT_COOLDOWN}]")
    retrain.add_argument("--keep", type=int, default=DEFAULT_KEEP,
                         help=f"ended retrain training jobs kept [{DEFAULT_KEEP}]")
    retrain.add_argument("--poll-seconds", type=float, default=POLL_S,
                         help=f"how often the training job's state is read [{POLL_S:g}]")


def _required_env(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise ConfigError(f"{name} is unset: the retrain runs in a Job made from the stack's "
                          "retrain CronJob, whose pod sets it", key=name)
    return value


def _source(args: argparse.Namespace) -> str | None:
    if args.source_env is None:
        return args.source
    source = os.environ.get(args.source_env, "").strip()
    if not source:
        raise ConfigError(f"--source-env {args.source_env}: the variable is unset or empty",
                          key=args.source_env)
    return source


def _terminated(signum, frame) -> None:
    raise SystemExit(143)  # a deleted pod: record the retrain as failed, free the slot


def run(args: argparse.Namespace) -> None:
    if args.drift_windows < 1 or args.keep < 0 or args.poll_seconds <= 0:
        raise ConfigError("--drift-windows must be >= 1, --keep >= 0, --poll-seconds > 0")
    cooldown = drift.parse_duration("--cooldown", args.cooldown)
    try:
        manifest = RetrainManifest.from_json(args.manifest.read_bytes())
    except OSError as e:
        raise ConfigError(f"--manifest {args.manifest}: {e.strerror}") from None
    store = open_store(args.store)
    cluster = Cluster(_required_env(NAMESPACE_ENV), manifest.job["kind"])
    origin = cluster.origin(_required_env(RETRAIN_JOB_ENV))
    if origin.owner is None:
        raise RetrainError(f"Job {origin.name} has no CronJob owner: start a retrain with "
                           "kubectl create job --from=cronjob/<the stack's retrain CronJob>")
    report = ""
    if args.if_drift:
        found = drift.drift_trigger(store, manifest.name, args.drift_windows, cooldown)
        if found is None:
            return
        report = found.report
    reason = DRIFT if args.if_drift else PERSON if origin.manual else SCHEDULE
    trigger = RetrainTrigger(origin.retrain_id, reason, report)
    signal.signal(signal.SIGTERM, _terminated)
    retrain(args, store, cluster, manifest, origin, trigger)


def _holder_running(cluster: Cluster):
    def running(slot: RetrainSlot) -> bool:
        if slot.training_job:
            return cluster.training(slot.training_job)
        return cluster.job_running(slot.job)
    return running


def retrain(args, store, cluster: Cluster, manifest: RetrainManifest, origin, trigger) -> None:
    requested = origin.created.strftime(TIME_FORMAT)
    records = Records(store, manifest.name, trigger, origin.name, requested)
    before = records.ended()
    if before is not None:  # the pod restarted after its retrain ended: report it again
        log.info("retrain %s of %s ended already: %s (%s)", trigger.id, manifest.name,
                 before.state, before.message)
        if before.state == FAILED:
            raise RetrainError(f"retrain {trigger.id} of {manifest.name} failed: "
                               f"{before.message}")
        return
    slot = Slot(store, manifest.name, trigger.id, origin.name, _holder_running(cluster))
    holder = slot.take()
    if holder is not None:
        what = holder.training_job or f"Job {holder.job}"
        if trigger.reason != DRIFT:  # a drift check every few minutes would flood the list
            records.write(SKIPPED, f"retrain {holder.retrain_id} ({what}) is training "
                                   f"{manifest.name}: this one trains nothing")
        log.info("retrain %s (%s) is training %s: this retrain trains nothing",
                 holder.retrain_id, what, manifest.name)
        return
    records.write(records.record.state, f"started by {trigger.reason}")
    state, message = FAILED, "stopped before its training job ended"
    try:
        name = start_training(args, store, cluster, manifest, origin, trigger, records, slot)
        succeeded, message = wait_for(cluster, name, args.poll_seconds)
        state = FINISHED if succeeded else FAILED
    except (TrainstackError, cluster.ApiException) as e:
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise
    except SystemExit:
        # SIGTERM (the pod deleted, drained, evicted) once the training job exists: that job
        # is the CronJob's and trains on. The slot stays held by it (a successor waits
        # until it ends; this retrain's restarted pod waits for it again), not released.
        if records.record.training_job:
            state, message = TRAINING, "its pod stopped; its training job trains on"
        raise
    finally:
        records.write(state, message)
        if state != TRAINING:
            slot.release()
    deleted = cluster.prune(manifest.name, args.keep, records.record.training_job)
    if deleted:
        log.info("deleted ended retrain jobs %s (keeping the newest %d)", ", ".join(deleted),
                 args.keep)
    if state == FAILED:
        raise RetrainError(f"retrain {trigger.id} of {manifest.name} failed: {message}")


def start_training(args, store, cluster: Cluster, manifest: RetrainManifest, origin, trigger,
                   records: Records, slot: Slot) -> str:
    """Ingest (when a source is given), then create the training job; returns its name."""
    source = _source(args)
    if args.dataset and source is not None:
        from trainer.data.ingest import ingest

        records.write(records.record.state, f"ingesting {args.dataset} again")
        ingest(store, args.dataset, source)
    body = jobs.training_job(manifest, trigger, origin.owner, cluster.namespace)
    name = body["metadata"]["name"]
    # Named in the slot before it exists: a pod stopped between the two still holds the
    # slot for the job it may have created (its name is fixed by the retrain).
    slot.note_training_job(name)
    created = cluster.create(body)
    records.write(TRAINING, f"{cluster.kind} {name} {'created' if created else 'running'}",
                  training_job=name)
    return name


def wait_for(cluster: Cluster, name: str, poll_seconds: float) -> tuple[bool, str]:
    """Until the training job ends: ``(succeeded, message)``."""
    while True:
        job = cluster.get(name)
        if job is None:
            return False, f"{cluster.kind} {name} was deleted before it ended"
        outcome = jobs.ended(job)
        if outcome is not None:
            return outcome
        time.sleep(poll_seconds)
