"""Retraining (`retrainSchedule`, `retrainOnDrift`): CronJobs whose pods run the image's
`python -m trainer retrain` (trainer/retrain/), and what they may do.

- CronJob `trainstack-retrain`: on `retrainSchedule` (UTC), or suspended without one (it
  then only serves `kubectl create job --from=cronjob/trainstack-retrain <name>`, a retrain
  by hand). With `retrainOnDrift`, CronJob `trainstack-retrain-drift` runs the same command
  with `--if-drift` every few minutes: it retrains only when the served version's newest
  driftAlertWindows drift checks all found drift, at most once per retrainCooldown.
  `concurrencyPolicy: Forbid`; a retrain's pod waits for its training job, so a schedule
  due meanwhile is skipped, and the model's retrain slot in the store keeps a retrain made
  by hand from training beside it.
- ConfigMap `trainstack-retrain`: the stack's own training job (PyTorchJob or TrainJob:
  workers, resources, image, pod template) as a manifest, data the pod reads (no script).
- ServiceAccount and Role `trainstack-retrain`: get Jobs (its own: which CronJob owns it),
  and create, get, list and delete the one training job kind, in this namespace only;
  nothing else, no Secrets. Its pods are the only ones of the stack with an API token: a
  projected one, mounted by name where the client looks (automount stays off), valid for
  an hour and renewed by the kubelet.

The training job a retrain creates is owned by the CronJob, so deleting the CronJob (as
`pulumi destroy` does) deletes every job and pod it made, and Pulumi manages none of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
from pulumi import _types

from infra.workloads import pod, trainjob
from infra.workloads import training as train
from infra.workloads.catalog import RETRAIN, TRAINER
from trainer.contract.env import DATASET_SOURCE_ENV, NAMESPACE_ENV, RETRAIN_JOB_ENV
from trainer.contract.lifecycle.promotion import GATE_ENV, TOLERANCE_ENV
from trainer.contract.lifecycle.retrain import TRAINING_KINDS, RetrainManifest

CRONJOB = RETRAIN.name
DRIFT_CRONJOB = f"{RETRAIN.name}-drift"
MANIFEST_DIR = "/etc/trainstack-retrain"
MANIFEST_FILE = f"{MANIFEST_DIR}/manifest.json"
DRIFT_CHECKS = "*/5 * * * *"  # how often the drift CronJob reads the newest drift checks
# The CronJob kept for retrains by hand only is suspended: its schedule never runs.
BY_HAND_ONLY = "0 0 1 1 *"
TIME_ZONE = "Etc/UTC"
JOB_NAME_FIELD = "metadata.labels['batch.kubernetes.io/job-name']"
# Where in-cluster clients read the ServiceAccount's token, CA and namespace.
TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
TOKEN_SECONDS = 3600


@dataclass
class RetrainArgs:
    namespace: pulumi.Input[str]
    training: train.TrainingArgs  # the stack's own training job: the manifest's source
    model_name: str
    schedule: str | None  # retrainSchedule (None: by hand, and on drift)
    on_drift: bool
    drift_windows: int
    cooldown: str
    depends_on: Sequence[pulumi.Resource] = ()  # the training job (its kind, its runtime)


def plain(value: Any) -> Any:
    """An input-typed value (``...Args``, resolved) as the API's own camelCase JSON."""
    if _types.is_input_type(type(value)):
        value = _types.input_type_to_dict(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def training_manifest(args: RetrainArgs) -> pulumi.Output[str]:
    """The stack's training job without a name (trainer.contract.lifecycle.retrain.RetrainManifest)."""
    t = args.training
    if t.api == "trainjob":
        template = train.pod_template(t, train.CONFIG_MAP, TRAINER.service_account)
        spec: dict[str, Any] = trainjob.trainjob_spec(template, t.workers, t.gpus_per_worker)
        kind = "TrainJob"
    else:
        spec, kind = train.pytorchjob_spec(t, train.CONFIG_MAP, TRAINER.service_account), \
            "PyTorchJob"
    group, version, _ = TRAINING_KINDS[kind]
    job = {"apiVersion": f"{group}/{version}", "kind": kind,
           "metadata": {"labels": pod.labels("trainer")}, "spec": spec}
    dataset = t.train_config["dataset"]
    return pulumi.Output.from_input(job).apply(lambda resolved: RetrainManifest(
        name=args.model_name, dataset=dataset, prefix=f"retrain-{args.model_name}",
        job=plain(resolved)).to_json())


def role_rules(api: str) -> list[k8s.rbac.v1.PolicyRuleArgs]:
    """Exactly what `python -m trainer retrain` calls (trainer/retrain/cluster.py)."""
    group, _, plural = TRAINING_KINDS["TrainJob" if api == "trainjob" else "PyTorchJob"]
    return [k8s.rbac.v1.PolicyRuleArgs(api_groups=["batch"], resources=["jobs"], verbs=["get"]),
            k8s.rbac.v1.PolicyRuleArgs(api_groups=[group], resources=[plural],
                                       verbs=["create", "get", "list", "delete"])]


def command(args: RetrainArgs, drift: bool) -> list[str]:
    t = args.training
    argv = ["python", "-m", "trainer", "retrain", "--manifest", MANIFEST_FILE]
    if t.ingest_source_secret:
        argv += ["--dataset", t.dataset, "--source-env", DATASET_SOURCE_ENV]
    elif t.ingest_source:
        argv += ["--dataset", t.dataset, "--source", t.ingest_source]
    if drift:
        argv += ["--if-drift", "--drift-windows", str(args.drift_windows),
                 "--cooldown", args.cooldown]
    return argv


def api_token() -> k8s.core.v1.VolumeArgs:
    """The ServiceAccount's token as automount would mount it, stated here: a projected,
    expiring token, the cluster's CA and the namespace."""
    v1 = k8s.core.v1
    return v1.VolumeArgs(name="api-token", projected=v1.ProjectedVolumeSourceArgs(sources=[
        v1.VolumeProjectionArgs(service_account_token=v1.ServiceAccountTokenProjectionArgs(
            path="token", expiration_seconds=TOKEN_SECONDS)),
        v1.VolumeProjectionArgs(config_map=v1.ConfigMapProjectionArgs(
            name="kube-root-ca.crt", items=[v1.KeyToPathArgs(key="ca.crt", path="ca.crt")])),
        v1.VolumeProjectionArgs(downward_api=v1.DownwardAPIProjectionArgs(items=[
            v1.DownwardAPIVolumeFileArgs(path="namespace", field_ref=v1.ObjectFieldSelectorArgs(
                field_path="metadata.namespace"))]))]))


def pod_template(args: RetrainArgs, account: pulumi.Input[str], config_map: pulumi.Input[str],
                 drift: bool) -> k8s.core.v1.PodTemplateSpecArgs:
    t = args.training
    secret_env = ([pod.secret_env(DATASET_SOURCE_ENV, t.ingest_source_secret, DATASET_SOURCE_ENV)]
                  if t.ingest_source_secret else [])
    spec = pod.ContainerSpec(
        name="retrain", image=t.image, image_pull_policy=t.image_pull_policy,
        command=command(args, drift),
        store=t.store.for_jobs(),  # as the ingest Job: a new password re-runs nothing
        cpu="250m", memory="512Mi", cpu_limit="1", memory_limit="2Gi",
        ephemeral_storage=t.ingest_storage,  # an ingest's download and unpacked files
        env={"PYTHONUNBUFFERED": "1", "TMPDIR": pod.TMP}, secret_env=secret_env,
        field_env={NAMESPACE_ENV: "metadata.namespace", RETRAIN_JOB_ENV: JOB_NAME_FIELD},
        scratch=[pod.tmp(t.ingest_storage)],
        volume_mounts=[k8s.core.v1.VolumeMountArgs(name="manifest", mount_path=MANIFEST_DIR,
                                                   read_only=True),
                       k8s.core.v1.VolumeMountArgs(name="api-token", mount_path=TOKEN_DIR,
                                                   read_only=True)],
    )
    volume = k8s.core.v1.VolumeArgs(
        name="manifest", config_map=k8s.core.v1.ConfigMapVolumeSourceArgs(name=config_map))
    return k8s.core.v1.PodTemplateSpecArgs(
        metadata=k8s.meta.v1.ObjectMetaArgs(labels=RETRAIN.labels),
        spec=pod.pod_spec(account, [pod.container(spec)], scratch=spec.scratch,
                          volumes=[volume, api_token()], restart_policy="OnFailure"))


class Retraining(pulumi.ComponentResource):
    """The retrain CronJob(s) and what their pods are allowed."""

    def __init__(self, name: str, args: RetrainArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("trainstack:index:Retraining", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        meta = {"namespace": args.namespace, "labels": RETRAIN.labels}
        account = pod.service_account(RETRAIN, args.namespace, child)
        role = k8s.rbac.v1.Role("retrain-role", metadata=k8s.meta.v1.ObjectMetaArgs(
            name=RETRAIN.name, **meta), rules=role_rules(args.training.api), opts=child)
        k8s.rbac.v1.RoleBinding(
            "retrain-rolebinding",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=RETRAIN.name, **meta),
            role_ref=k8s.rbac.v1.RoleRefArgs(api_group="rbac.authorization.k8s.io",
                                              kind="Role", name=role.metadata.name),
            subjects=[k8s.rbac.v1.SubjectArgs(kind="ServiceAccount", name=account.metadata.name,
                                              namespace=args.namespace)],
            opts=child)
        config_map = k8s.core.v1.ConfigMap(
            "retrain-manifest", metadata=k8s.meta.v1.ObjectMetaArgs(name=RETRAIN.name, **meta),
            data={"manifest.json": training_manifest(args)}, opts=child)
        after = pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on))
        self.cronjob = self._cronjob(CRONJOB, args, account, config_map, after,
                                     schedule=args.schedule, drift=False)
        self.drift_cronjob = (self._cronjob(DRIFT_CRONJOB, args, account, config_map, after,
                                            schedule=DRIFT_CHECKS, drift=True)
                              if args.on_drift else None)
        self.register_outputs({"cronjob": self.cronjob.metadata.name})

    @staticmethod
    def _cronjob(name: str, args: RetrainArgs, account, config_map, opts, *,
                 schedule: str | None, drift: bool) -> k8s.batch.v1.CronJob:
        kept = 1 if drift else 3  # a drift check every few minutes: the last one is enough
        return k8s.batch.v1.CronJob(
            name, metadata=k8s.meta.v1.ObjectMetaArgs(name=name, namespace=args.namespace,
                                                      labels=RETRAIN.labels),
            spec=k8s.batch.v1.CronJobSpecArgs(
                schedule=schedule or BY_HAND_ONLY, suspend=schedule is None,
                time_zone=TIME_ZONE, concurrency_policy="Forbid",
                starting_deadline_seconds=3600,  # due while the controller was away: an hour
                successful_jobs_history_limit=kept, failed_jobs_history_limit=3,
                job_template=k8s.batch.v1.JobTemplateSpecArgs(
                    metadata=k8s.meta.v1.ObjectMetaArgs(labels=RETRAIN.labels),
                    spec=k8s.batch.v1.JobSpecArgs(
                        backoff_limit=2,
                        template=pod_template(args, account.metadata.name,
                                              config_map.metadata.name, drift)))),
            opts=opts)


def promotion_env(gate: bool, tolerance: float | None) -> dict[str, str]:
    """The training container's promotion gate settings (trainer.contract.lifecycle.promotion): only
    what differs from the trainer's defaults (on, 1 point), so a stack without these keys
    renders as before."""
    env = {} if gate else {GATE_ENV: "off"}
    if tolerance is not None:
        env[TOLERANCE_ENV] = f"{tolerance:g}"
    return env
