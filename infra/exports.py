"""What `pulumi stack output` shows: names, addresses and the commands users run."""

from __future__ import annotations

from typing import Any

import pulumi

from infra import queueing
from infra.config.keys import StackConfig
from infra.workloads import pod
from infra.workloads.catalog import APP
from infra.workloads.jobparts import progress
from infra.workloads.retrain import CRONJOB, DRIFT_CRONJOB
from infra.workloads.tracking.mlflow_server import MlflowServer
from infra.workloads.trainjob import COMPLETION_INDEX_LABEL, JOBSET_NAME_LABEL
from infra.workloads.webapp import Inference


def stack_exports(cfg: StackConfig, job: pulumi.Output[str], store: pod.StoreRef,
                  inference: Inference, tracking: MlflowServer | None) -> dict[str, Any]:
    ns = cfg.namespace
    exports = {
        "namespace": ns,
        "store": store.url,
        "buckets": cfg.buckets,
        "inferenceUrl": inference.url,
        "inferenceAccess": inference.access,
        # One drift check of the served version from the app's pod (its store, its token).
        "driftCheck": (f"kubectl -n {ns} exec deploy/{APP.name} -- python -m inference "
                       f"monitor --model {cfg.model_name}"),
        **_job_exports(cfg, job),
        **retrain_exports(cfg),
    }
    if cfg.store_endpoint is None:
        exports["minioEndpoint"] = pulumi.Output.from_input(store.url).apply(
            lambda url: url.removeprefix("s3://"))
    if tracking is not None:
        exports["mlflowUrl"] = tracking.url
        exports["mlflowAccess"] = tracking.access
    if cfg.render_yaml_to:
        exports["renderedTo"] = cfg.render_yaml_to
    return exports


def _job_exports(cfg: StackConfig, job: pulumi.Output[str]) -> dict[str, Any]:
    """The job's name and the kubectl commands that follow it, for `trainingApi`'s kind."""
    ns = cfg.namespace
    if cfg.training_api == "trainjob":
        name_key, kind = "trainJobName", "trainjob"
        selector = pulumi.Output.concat(f"{JOBSET_NAME_LABEL}=", job)
        # Rank 0: completion index 0 of the replicated job `node`.
        rank0 = pulumi.Output.concat("-l ", selector, f",{COMPLETION_INDEX_LABEL}=0")
    else:
        name_key, kind = "pytorchJobName", "pytorchjob"
        selector = pulumi.Output.concat("training.kubeflow.org/job-name=", job)
        rank0 = pulumi.Output.concat(job, "-master-0")
    return {
        name_key: job,
        "followLogs": pulumi.Output.concat(
            f"kubectl -n {ns} logs -f -l ", selector, " --prefix --max-log-requests 64"),
        "masterLogs": pulumi.Output.concat(f"kubectl -n {ns} logs -f ", rank0),
        "jobStatus": pulumi.Output.concat(
            f"kubectl -n {ns} get {kind} ", job, f" -o wide && kubectl -n {ns} get pods -l ",
            selector),
        "progress": progress.read_command(ns, cfg.training_api, job),
        **queueing.exports(cfg),
    }


def retrain_exports(cfg: StackConfig) -> dict[str, Any]:
    """The retrain CronJobs, how to start a retrain by hand and how to serve a version."""
    ns = cfg.namespace
    found = {
        # A person serves a candidate or rolls back (the app's pod has the store's access).
        "promoteVersion": (f"kubectl -n {ns} exec deploy/{APP.name} -- python -m trainer "
                           f"promote --model {cfg.model_name} --version <VERSION>"),
    }
    if not cfg.retrains:
        return found
    found["retrainCronJob"] = CRONJOB
    found["retrainNow"] = (f"kubectl -n {ns} create job --from=cronjob/{CRONJOB} "
                           "retrain-by-hand-$(date +%s)")
    if cfg.retrain_on_drift:
        found["retrainOnDriftCronJob"] = DRIFT_CRONJOB
    return found
