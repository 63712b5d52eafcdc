"""`trainingApi: trainjob`: Kubeflow Trainer v2 installed, the stack's TrainingRuntime and a
TrainJob that runs the same pods as the PyTorchJob (rendered under Pulumi's mocks)."""

from __future__ import annotations

import pytest

from infra.config.keys import ConfigError
from infra.operators.trainer_v2 import COMMIT
from infra.workloads import trainjob as tj
from infra.workloads.catalog import TRAINER
from infra.workloads.jobparts import progress
from tests.infra.infra_helpers import (
    PASSWORD,
    PUSHED,
    RENDERED,
    one,
    pod_specs,
    pytorchjob,
    replica_pods,
    trainjob_pods,
)
from tests.infra.render import Rendering, render
from trainer.contract.errors import CONFIG_EXIT, USAGE_EXIT
from trainer.contract.reporting.job_status import API_CREDENTIALS_ENV, PROGRESS_JOB_ENV

TRAINJOB = {**PUSHED, "trainingApi": "trainjob"}
DIRECTORY = "kubernetes:kustomize/v2:Directory"
RESERVED = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", *tj.TORCH_ENV)


@pytest.fixture(scope="module")
def cpu() -> Rendering:
    return render(TRAINJOB)


@pytest.fixture(scope="module")
def gpu() -> Rendering:
    return render({**TRAINJOB, "workers": "3", "gpusPerWorker": "2",
                   "minioRootPassword": PASSWORD,
                   "nodeSelector": '{"nvidia.com/gpu.product": "A100"}',
                   "tolerations": '[{"key": "dedicated", "operator": "Equal", "value": "ml", '
                                  '"effect": "NoSchedule"}]'})


def job(rendering: Rendering) -> dict:
    return one(rendering, "TrainJob")


def runtime(rendering: Rendering) -> dict:
    return rendering.objects[f"TrainingRuntime/{tj.RUNTIME}"]


def test_trainer_v2_is_installed_from_its_pinned_overlay_not_the_v1_operator(cpu):
    assert "PyTorchJob" not in {o["kind"] for o in cpu.objects.values()}
    assert cpu.by_type("trainstack:index:TrainingOperator") == []
    (installer,) = cpu.by_type("trainstack:index:TrainerV2")
    (directory,) = cpu.by_type(DIRECTORY)
    assert directory.parent == installer.urn and directory.remote
    assert directory.inputs["directory"] == (
        f"https://github.com/kubeflow/trainer//manifests/overlays/manager?ref={COMMIT}")
    assert len(COMMIT) == 40
    # The job and its runtime wait for the controllers (their webhooks): a dependency on
    # the component is one on its Directory, which covers what the provider applies.
    for kind, name in (("TrainJob", job(cpu)["metadata"]["name"]),
                       ("TrainingRuntime", tj.RUNTIME)):
        assert directory.urn in cpu.registration(kind, name).dependencies


def test_an_installed_trainer_is_used_as_it_is():
    rendering = render({**TRAINJOB, "installTrainingOperator": "false"})
    assert rendering.by_type(DIRECTORY) == []
    assert job(rendering)["spec"]["runtimeRef"]["name"] == tj.RUNTIME


def test_the_runtime_restarts_every_rank_when_a_pod_fails(cpu):
    spec = runtime(cpu)["spec"]
    # The PyTorchJob's backoffLimit, as JobSet restarts (every Job, so every rank); but a
    # Job its podFailurePolicy failed (a configuration error) fails the JobSet at once.
    assert spec["template"]["spec"]["failurePolicy"] == {"maxRestarts": 3, "rules": [
        {"name": "ConfigurationError", "action": "FailJobSet",
         "onJobFailureReasons": ["PodFailurePolicy"]}]}
    (rjob,) = spec["template"]["spec"]["replicatedJobs"]
    assert rjob["name"] == "node" and len(rjob["name"]) <= 20 and rjob["replicas"] == 1
    assert rjob["template"]["metadata"]["labels"] == {tj.ANCESTOR_LABEL: "trainer"}
    job_spec = rjob["template"]["spec"]
    assert job_spec["backoffLimit"] == 0  # a failed pod fails its Job at once
    # ... by this rule when it exited with a configuration error (a restart fails alike);
    # a pod a disruption stopped (preemption, a drained or lost node) is just replaced.
    assert job_spec["podFailurePolicy"] == {"rules": [
        {"action": "FailJob", "onExitCodes": {"containerName": "node", "operator": "In",
                                              "values": [USAGE_EXIT, CONFIG_EXIT]}},
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]}
    pod = job_spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["terminationGracePeriodSeconds"] == 30  # the checkpoint on SIGTERM fits
    assert [c["name"] for c in pod["containers"]] == ["node"]
    assert spec["mlPolicy"] == {"numNodes": 1, "torch": {}}
    # The fences select training pods by these labels.
    assert job_spec["template"]["metadata"]["labels"] == TRAINER.labels


@pytest.mark.parametrize("workers", ["1", "2", "5"])
def test_workers_are_nodes_with_one_process_each_on_cpu(workers):
    trainer = job(render({**TRAINJOB, "workers": workers}))["spec"]["trainer"]
    assert trainer["numNodes"] == int(workers)
    assert trainer["numProcPerNode"] == 1  # unset, the plugin would start one per CPU


def test_gpus_are_processes_per_node(gpu):
    trainer = job(gpu)["spec"]["trainer"]
    assert trainer["numNodes"] == 3 and trainer["numProcPerNode"] == 2
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "2"


def test_torchrun_reads_the_controllers_env_none_of_it_is_set_by_the_stack(cpu, gpu):
    for rendering in (cpu, gpu):
        trainer = job(rendering)["spec"]["trainer"]
        # torchrun, through trainer.launch: a worker's configuration error is its status.
        assert trainer["command"] == ["python", "-m", "trainer.launch", "-m", "trainer",
                                      "train", "--config", "/etc/trainstack/train.json"]
        names = {e["name"] for e in trainer["env"]}
        # The webhook refuses PET_* here; MASTER_*/RANK/WORLD_SIZE are torchrun's to set.
        assert not names & set(RESERVED)
        assert "$(" not in " ".join(trainer["command"])


def test_secrets_reach_the_node_container_by_reference_only(gpu):
    env = {e["name"]: e for e in job(gpu)["spec"]["trainer"]["env"]}
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert set(env[name]) == {"name", "valueFrom"}
        assert env[name]["valueFrom"]["secretKeyRef"]["key"] == name
    assert PASSWORD not in str(job(gpu)) + str(runtime(gpu))


def without_api(spec: dict) -> dict:
    """A training pod spec less what differs by API: container name, command, the v1 port,
    the restart policy, how rank 0 reports progress (a PyTorchJob's annotation)."""
    spec = {**spec, "containers": [dict(c) for c in spec["containers"]]}
    spec.pop("restartPolicy", None)
    spec["volumes"] = [v for v in spec["volumes"] if v["name"] != progress.CREDENTIALS_VOLUME]
    for container in spec["containers"]:
        for key in ("name", "command", "ports"):
            container.pop(key, None)
        container["env"] = [e for e in container["env"] if e["name"] not in (
            PROGRESS_JOB_ENV, API_CREDENTIALS_ENV, progress.JOB_NAME_ENV)]
        container["volumeMounts"] = [m for m in container["volumeMounts"]
                                     if m["name"] != progress.CREDENTIALS_VOLUME]
    return spec


@pytest.mark.parametrize("config", [
    {}, {"workers": "3", "gpusPerWorker": "2"}, {"networkPolicy": "ingress-egress"},
    {"nodeSelector": '{"pool": "train"}', "cpuPerWorker": "1500m", "memoryPerWorker": "5Gi"},
    {"mlflow": "false", "bucketPrefix": "team-"},
])
def test_the_trainjob_runs_the_pytorchjobs_pod(config):
    """Same image, resources, env, volumes, security, scheduling: only the API differs."""
    v1 = render({**PUSHED, **config})
    v2 = render({**TRAINJOB, **config})
    (master,) = [p for p in replica_pods(pytorchjob(v1)) if p["metadata"]["name"].endswith(
        "-master-0")]
    pods = trainjob_pods(v2.objects, job(v2))
    assert len(pods) == int(config.get("workers", "2"))
    for pod in pods:
        assert without_api(pod["spec"]) == without_api(master["spec"])
        assert TRAINER.labels.items() <= pod["metadata"]["labels"].items()
    # Everything else in the stack's namespace is the same object, but how rank 0 reports
    # progress: the PyTorchJob's Role, the TrainJob's way to Trainer's status server.
    def stack_objects(rendering, job_kinds):
        return {k: o for k, o in rendering.objects.items() if o["kind"] not in job_kinds
                and o["metadata"].get("namespace", "trainstack") == "trainstack"}

    one, two = (stack_objects(v1, ("PyTorchJob", "Role", "RoleBinding")),
                stack_objects(v2, ("TrainJob", "TrainingRuntime")))
    if config.get("networkPolicy") == "ingress-egress":
        egress = two["NetworkPolicy/trainer"]["spec"]["egress"]
        assert egress[-1]["to"][0]["namespaceSelector"]["matchExpressions"][0]["values"] == [
            "kubeflow-system"]
        del egress[-1]
    assert one == two


def test_scheduling_reaches_the_pods_through_the_runtime_patch(gpu):
    (patch,) = job(gpu)["spec"]["runtimePatches"]
    assert patch["manager"] == tj.PATCH_MANAGER and "/" in patch["manager"]
    (rjob,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert rjob["name"] == "node"
    pod = rjob["template"]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "A100"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in \
        pod["tolerations"]
    # Env is not patched (the webhook refuses env for container node in a patch).
    assert [set(c) for c in pod["containers"]] == [{"name", "volumeMounts"}]


def test_a_rescale_or_any_spec_change_replaces_the_trainjob_under_a_new_name(cpu):
    name = job(cpu)["metadata"]["name"]
    assert job(render(TRAINJOB))["metadata"]["name"] == name  # stable for the same config
    for change in ({"workers": "3"}, {"cpuPerWorker": "2"}, {"epochs": "20"}):
        assert job(render({**TRAINJOB, **change}))["metadata"]["name"] != name, change
    registration = cpu.registration("TrainJob", name)
    assert registration.replace_on_changes == ["spec"]
    assert registration.delete_before_replace  # never two runs on one checkpoint
    annotations = registration.inputs["metadata"]["annotations"]
    assert annotations["pulumi.com/skipAwait"] == "true"
    # Deleted in the background: Trainer recreates the JobSet of a TrainJob whose
    # foreground deletion is pending (tests/cluster/test_trainjob.py). The PyTorchJob's
    # operator does not, so it keeps the provider's foreground delete (pods gone first).
    assert annotations["pulumi.com/deletionPropagationPolicy"] == "background"
    v1 = pytorchjob(render(PUSHED))
    assert "pulumi.com/deletionPropagationPolicy" not in v1["metadata"].get("annotations", {})
    # The runtime is not replaced with the job (shared by every run of the stack).
    assert cpu.registration("TrainingRuntime", tj.RUNTIME).replace_on_changes == []


def test_destroy_deletes_the_trainjob_before_its_runtime_and_the_controllers(cpu):
    step = {cpu.resources[u].name: i for i, s in enumerate(cpu.destroy_order()) for u in s}
    trainjob = step["trainjob"]
    assert trainjob < step["trainingruntime"]
    for controller_object in ("kubeflow-trainer-trainjobs.trainer.kubeflow.org",
                              "kubeflow-trainer-jobsets.jobset.x-k8s.io",
                              ("kubeflow-trainer-kubeflow-system/"
                               "kubeflow-trainer-controller-manager"),
                              "kubeflow-trainer-kubeflow-system/jobset-controller-manager"):
        assert step["trainingruntime"] < step[controller_object], controller_object
    for name in ("minio", "minio-credentials", "train-config"):
        assert trainjob < step[name], name


def test_exports_follow_the_trainjob(cpu):
    name = job(cpu)["metadata"]["name"]
    exports = cpu.exports
    assert exports["trainJobName"] == name and "pytorchJobName" not in exports
    selector = f"jobset.sigs.k8s.io/jobset-name={name}"
    assert exports["followLogs"] == (f"kubectl -n trainstack logs -f -l {selector} --prefix "
                                     "--max-log-requests 64")
    assert exports["masterLogs"] == (f"kubectl -n trainstack logs -f -l {selector},"
                                     "batch.kubernetes.io/job-completion-index=0")
    assert exports["jobStatus"].startswith(f"kubectl -n trainstack get trainjob {name} ")


def test_render_mode_writes_the_runtime_before_the_trainjob():
    rendering = render({**RENDERED, "trainingApi": "trainjob"})
    waves = {o["kind"]: int(o["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"])
             for o in rendering.objects.values()}
    assert waves["TrainingRuntime"] < waves["TrainJob"] == 3
    assert rendering.by_type("trainstack:index:TrainerV2") == []


@pytest.mark.parametrize(("config", "key", "allowed"), [
    ({**TRAINJOB, "trainingApi": "TrainJob"}, "trainingApi", "pytorchjob"),
    ({**TRAINJOB, "trainingApi": "v2"}, "trainingApi", "trainjob (Kubeflow Trainer v2)"),
    ({**TRAINJOB, "trainingOperatorVersion": "v1.9.0"}, "trainingOperatorVersion",
     "unset when trainingApi is trainjob"),
    ({**TRAINJOB, "namespace": "kubeflow-system"}, "namespace", "kubeflow-system"),
    ({**RENDERED, "trainingApi": "trainjob", "installTrainingOperator": "true"},
     "installTrainingOperator", "install the Kubeflow Trainer v2 with your GitOps tool"),
])
def test_bad_training_api_settings_stop_before_any_resource(config, key, allowed):
    with pytest.raises(ConfigError) as e:
        render(config)
    assert e.value.key == key and allowed in str(e.value)


def test_every_trainjob_pod_is_covered_by_the_pod_checks(gpu):
    """The shared pod checks (security, resources, store env) see the TrainJob's pod."""
    specs = pod_specs(gpu)
    (key,) = [k for k in specs if k.startswith("TrainJob/")]
    (container,) = specs[key]["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert specs[key]["automountServiceAccountToken"] is False
