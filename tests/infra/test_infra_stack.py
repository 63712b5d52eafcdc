"""The rendered stack: resources, dependencies, scaling, GPUs, replacement, exports."""

from __future__ import annotations

import json
import socket

import pytest

from infra.config.keys import ConfigError
from tests.infra.infra_helpers import IMAGE as REGISTRY_IMAGE
from tests.infra.infra_helpers import (
    PASSWORD,
    PUSHED,
    env_of,
    minio_credentials,
    pod_specs,
    pytorchjob,
    secret_ref,
    versioned,
    workload_specs,
)
from tests.infra.render import MOCK_RANDOM_PASSWORD, render
from trainer.contract.config import CIFAR10_URL

DIRECTORY = "kubernetes:kustomize/v2:Directory"
IMAGE = "docker:index/image:Image"
STORE = "s3://minio.trainstack.svc:9000"


def deps(rendering, kind, name) -> set[str]:
    return set(rendering.resources[rendering.urn_of(kind, name)].dependencies)


def test_defaults_render_every_resource(default_stack):
    kinds = sorted(default_stack.objects)
    job = pytorchjob(default_stack)["metadata"]["name"]
    # Named by their content (infra/workloads/rotation.py): what pods that keep running read.
    secret, aws_config = (versioned(default_stack, "Secret", "minio-credentials"),
                          versioned(default_stack, "ConfigMap", "mlflow-aws-config"))
    assert kinds == sorted([
        "Namespace/trainstack", "Secret/minio-credentials", f"Secret/{secret}",
        "PersistentVolumeClaim/minio-data",
        "Deployment/minio", "Service/minio", "Job/trainstack-buckets",
        "ConfigMap/trainstack-train", "Job/trainstack-ingest-cifar10", f"PyTorchJob/{job}",
        "Deployment/inference", "Service/inference",
        # one identity per workload, no token mounted
        "ServiceAccount/minio", "ServiceAccount/trainstack-buckets",
        "ServiceAccount/trainstack-ingest", "ServiceAccount/trainer", "ServiceAccount/inference",
        # rank 0 may patch its PyTorchJob's progress annotation, and nothing else
        "Role/trainstack-job-progress", "RoleBinding/trainstack-job-progress",
        # the fences: deny by default, one policy per workload
        "NetworkPolicy/default-deny", "NetworkPolicy/minio", "NetworkPolicy/trainstack-buckets",
        "NetworkPolicy/trainstack-ingest", "NetworkPolicy/trainer", "NetworkPolicy/inference",
        # the MLflow server (`mlflow` true): SQLite on its volume, boto3's config, fenced
        "ServiceAccount/mlflow", "PersistentVolumeClaim/mlflow-data",
        f"ConfigMap/{aws_config}", "ConfigMap/mlflow-tracking", "Deployment/mlflow",
        "Service/mlflow",
        "NetworkPolicy/mlflow",
        # the operator's init-container template (none: infra/operators/training_operator.py)
        "ConfigMap/training-operator-init-container",
    ])
    assert sorted(default_stack.patches) == ["Deployment/training-operator"]
    assert len(default_stack.by_type(IMAGE)) == 1
    # MinIO's root password, and the key of the secret versions (infra/workloads/rotation.py).
    assert len(default_stack.by_type("random:index/randomPassword:RandomPassword")) == 2
    (operator,) = default_stack.by_type(DIRECTORY)
    assert operator.remote  # provider-side component: nothing fetched by this program
    # v1.8.1, pinned to the commit its tag named when it was checked.
    assert operator.inputs["directory"] == (
        "https://github.com/kubeflow/training-operator//manifests/overlays/standalone"
        "?ref=0f8735faade3651dfe44e45c6fbc30fa9152641d")
    assert default_stack.by_type("pulumi:providers:kubernetes") == []  # the default provider


def test_every_resource_is_parented_to_a_typed_component(default_stack):
    components = {r.urn: r.type for r in default_stack.resources.values()
                  if r.type.startswith("trainstack:index:")}
    assert set(components.values()) == {
        "trainstack:index:TrainingOperator", "trainstack:index:MinIO",
        "trainstack:index:TrainerImage", "trainstack:index:Training",
        "trainstack:index:Inference", "trainstack:index:Buckets",
        "trainstack:index:NetworkFences", "trainstack:index:MlflowServer",
        "trainstack:index:SecretVersionKey"}
    operator_manifests = {r.urn for r in default_stack.by_type(DIRECTORY)}
    for r in default_stack.resources.values():
        if r.parent in operator_manifests:
            continue  # the kustomize Directory's own children (its provider registers them)
        if r.custom and r.type != "kubernetes:core/v1:Namespace":
            assert r.parent in components, f"{r.type} {r.name} is not parented"


def test_job_waits_for_operator_buckets_ingest_and_image(default_stack):
    job = pytorchjob(default_stack)["metadata"]["name"]
    job_deps = deps(default_stack, "PyTorchJob", job)
    operator = default_stack.by_type(DIRECTORY)[0].urn
    image = default_stack.by_type(IMAGE)[0].urn
    assert operator in job_deps and image in job_deps
    assert default_stack.urn_of("Job", "trainstack-buckets") in job_deps
    assert default_stack.urn_of("Job", "trainstack-ingest-cifar10") in job_deps
    assert default_stack.urn_of("ConfigMap", "trainstack-train") in job_deps


def test_ingest_after_buckets_and_image_buckets_after_minio(default_stack):
    ingest = deps(default_stack, "Job", "trainstack-ingest-cifar10")
    assert default_stack.urn_of("Job", "trainstack-buckets") in ingest
    assert default_stack.by_type(IMAGE)[0].urn in ingest
    assert default_stack.by_type(DIRECTORY)[0].urn not in ingest  # no need to wait for it
    buckets = deps(default_stack, "Job", "trainstack-buckets")
    assert default_stack.urn_of("Deployment", "minio") in buckets
    assert default_stack.urn_of("Service", "minio") in buckets


def test_app_after_the_buckets(default_stack):
    app = deps(default_stack, "Deployment", "inference")
    assert default_stack.urn_of("Job", "trainstack-buckets") in app
    assert default_stack.urn_of("Secret", versioned(default_stack, "Secret",
                                                    "minio-credentials")) in app


def test_operator_can_be_skipped():
    rendering = render({**PUSHED, "installTrainingOperator": "false"})
    assert rendering.by_type(DIRECTORY) == []
    assert pytorchjob(rendering)  # the job is still created


@pytest.mark.parametrize(("workers", "expected"), [
    ("1", {"Master": 1}), ("2", {"Master": 1, "Worker": 1}), ("3", {"Master": 1, "Worker": 2}),
])
def test_workers_shape_the_replicas(workers, expected):
    spec = pytorchjob(render({**PUSHED, "workers": workers}))["spec"]
    replicas = spec["pytorchReplicaSpecs"]
    assert {k: v["replicas"] for k, v in replicas.items()} == expected  # no Worker key for 1
    templates = [json.dumps(r["template"], sort_keys=True) for r in replicas.values()]
    assert len(set(templates)) == 1  # one pod template for every replica
    for replica in replicas.values():
        assert replica["restartPolicy"] == "OnFailure"
        assert replica["template"]["spec"]["containers"][0]["name"] == "pytorch"
    assert spec["runPolicy"]["backoffLimit"] >= 1


def test_cpu_pods(default_stack):
    image = default_stack.by_type(IMAGE)[0].inputs
    assert image["build"]["args"] == {
        "TORCH_VARIANT": "cpu", "TORCH_INDEX_URL": "https://download.pytorch.org/whl/cpu"}
    for replica in pytorchjob(default_stack)["spec"]["pytorchReplicaSpecs"].values():
        pod = replica["template"]["spec"]
        container = pod["containers"][0]
        assert container["command"] == [
            "python", "-m", "trainer", "train", "--config", "/etc/trainstack/train.json"]
        assert container["resources"]["requests"] == container["resources"]["limits"] == {
            "cpu": "1", "memory": "3Gi", "ephemeral-storage": "6Gi"}  # /tmp + data cache
        assert "tolerations" not in pod and "nodeSelector" not in pod


def test_training_pods_get_the_data_cache_and_checkpoint_every_steps():
    rendering = render({**PUSHED, "dataCacheSize": "1500Mi", "checkpointEverySteps": "100"})
    for replica in pytorchjob(rendering)["spec"]["pytorchReplicaSpecs"].values():
        pod = replica["template"]["spec"]
        container = pod["containers"][0]
        assert container["resources"]["limits"]["ephemeral-storage"] == "3548Mi"
        (cache,) = [v for v in pod["volumes"] if v["name"] == "data-cache"]
        assert cache["emptyDir"] == {"sizeLimit": "1500Mi"}
        assert {"name": "data-cache", "mountPath": "/data-cache"} in container["volumeMounts"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["TRAINSTACK_DATA_CACHE_DIR"] == "/data-cache"
        assert env["TRAINSTACK_DATA_CACHE_BYTES"] == str(1500 * 2**20 * 9 // 10)
    train_json = rendering.objects["ConfigMap/trainstack-train"]["data"]["train.json"]
    assert json.loads(train_json)["checkpoint_every_steps"] == 100


def test_gpus_on_every_replica_cuda_build_and_torchrun(gpu_stack):
    image = gpu_stack.by_type(IMAGE)[0].inputs
    # The lock's torch from PyPI (the cu130 build): no index of its own.
    assert image["build"]["args"] == {"TORCH_VARIANT": "cu130", "TORCH_INDEX_URL": ""}
    assert image["imageName"].split(":")[-1].startswith("cu130-")
    replicas = pytorchjob(gpu_stack)["spec"]["pytorchReplicaSpecs"]
    assert {k: v["replicas"] for k, v in replicas.items()} == {"Master": 1, "Worker": 2}
    for replica in replicas.values():
        pod = replica["template"]["spec"]
        container = pod["containers"][0]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
        assert container["resources"]["requests"]["nvidia.com/gpu"] == "2"
        assert {"key": "nvidia.com/gpu", "operator": "Exists",
                "effect": "NoSchedule"} in pod["tolerations"]
        assert container["command"][:6] == [
            "torchrun", "--nproc_per_node=2", "--nnodes=$(WORLD_SIZE)", "--node_rank=$(RANK)",
            "--master_addr=$(MASTER_ADDR)", "--master_port=$(MASTER_PORT)"]
        assert container["command"][6:] == [
            "-m", "trainer", "train", "--config", "/etc/trainstack/train.json"]
        # CUDA in the image => the trainer picks NCCL; surface NCCL's own errors.
        assert env_of(container)["NCCL_DEBUG"] == "WARN"


def test_user_scheduling_reaches_training_pods():
    rendering = render({
        **PUSHED, "gpusPerWorker": "1",
        "nodeSelector": '{"cloud.google.com/gke-accelerator": "nvidia-l4"}',
        "tolerations": '[{"key": "dedicated", "operator": "Equal", "value": "ml", '
                       '"effect": "NoSchedule"}]'})
    for replica in pytorchjob(rendering)["spec"]["pytorchReplicaSpecs"].values():
        pod = replica["template"]["spec"]
        assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
        assert {t["key"] for t in pod["tolerations"]} == {"dedicated", "nvidia.com/gpu"}
        assert pod["containers"][0]["command"][0] == "python"  # 1 GPU: no torchrun


def test_change_of_workers_or_resources_replaces_the_job(default_stack):
    base = pytorchjob(default_stack)["metadata"]["name"]
    assert pytorchjob(render(PUSHED))["metadata"]["name"] == base  # stable for the same config
    for change in ({"workers": "3"}, {"cpuPerWorker": "2"}, {"memoryPerWorker": "4Gi"},
                   {"gpusPerWorker": "1"}, {"epochs": "20"},
                   # issue 9, finding 1: new data must start a new job after the ingest
                   {"datasetSource": "https://mirror.example.com/cifar-10-python.tar.gz"},
                   {"image": "registry.example.com/other/trainstack-trainer"}):
        # metadata.name is immutable in Kubernetes: a new name is a replacement.
        assert pytorchjob(render({**PUSHED, **change}))["metadata"]["name"] != base, change
    (job,) = default_stack.by_type("kubernetes:kubeflow.org/v1:PyTorchJob")
    assert job.replace_on_changes == ["spec"]  # any other spec change: replace too
    assert job.delete_before_replace  # never two runs writing one checkpoint
    assert base.startswith("train-resnet18-cifar10-") and len(base) <= 40


def test_train_json_is_hyperparameters_only_and_mounted(default_stack):
    config_map = default_stack.objects["ConfigMap/trainstack-train"]
    assert set(config_map["data"]) == {"train.json"}
    assert json.loads(config_map["data"]["train.json"]) == {
        "dataset": "cifar10", "model": "resnet18", "epochs": 10, "batch_size": 128,
        "lr": 0.1, "seed": 0, "checkpoint_every_steps": 500}
    pod = next(iter(pytorchjob(default_stack)["spec"]["pytorchReplicaSpecs"].values()))
    spec = pod["template"]["spec"]
    assert {"name": "config", "configMap": {"name": "trainstack-train"}} in spec["volumes"]
    mounts = {m["mountPath"]: m for m in spec["containers"][0]["volumeMounts"]}
    assert mounts["/etc/trainstack"]["name"] == "config"
    shm = next(v for v in spec["volumes"] if v["name"] == mounts["/dev/shm"]["name"])
    assert shm["emptyDir"]["medium"] == "Memory"


def test_every_workload_reaches_the_store_with_secret_refs(default_stack):
    specs = pod_specs(default_stack)
    rolled = versioned(default_stack, "Secret", "minio-credentials")
    for key, spec in workload_specs(default_stack).items():
        env = env_of(spec["containers"][0])
        assert env["TRAINSTACK_STORE"] == STORE, key
        # The Jobs read the fixed-name twin: a new password does not run them again.
        secret = "minio-credentials" if key.startswith("Job/") else rolled
        assert env["AWS_ACCESS_KEY_ID"] == secret_ref(secret, "AWS_ACCESS_KEY_ID"), key
        assert env["AWS_SECRET_ACCESS_KEY"] == secret_ref(secret, "AWS_SECRET_ACCESS_KEY")
        assert "AWS_REGION" not in env and "TRAINSTACK_BUCKET_PREFIX" not in env, key
    # MinIO's root user is the workloads' access key: one Secret, one shape (as files).
    assert minio_credentials(default_stack) == {
        "MINIO_ROOT_USER": (rolled, "AWS_ACCESS_KEY_ID"),
        "MINIO_ROOT_PASSWORD": (rolled, "AWS_SECRET_ACCESS_KEY")}
    assert specs["Job/trainstack-buckets"]["containers"][0]["command"] == [
        "python", "-m", "trainer", "buckets", "--tracking"]  # also MLflow's bucket
    assert specs["Job/trainstack-ingest-cifar10"]["containers"][0]["command"] == [
        "python", "-m", "trainer", "ingest", "--dataset", "cifar10", "--source", CIFAR10_URL]


def test_datasets_without_download_have_no_ingest_job():
    rendering = render({**PUSHED, "dataset": "digits", "model": "smallcnn"})
    assert not [k for k in rendering.objects if k.startswith("Job/trainstack-ingest")]
    app = rendering.objects["Deployment/inference"]["spec"]["template"]["spec"]
    env = env_of(app["containers"][0])
    assert env["TRAINSTACK_MODEL_NAME"] == "smallcnn-digits"
    custom = render(
        {**PUSHED, "dataset": "imagefolder", "datasetSource": "https://example.com/x.zip"})
    ingest = custom.objects["Job/trainstack-ingest-imagefolder"]["spec"]["template"]["spec"]
    assert ingest["containers"][0]["command"][-2:] == ["--source", "https://example.com/x.zip"]


def test_inference_deployment_and_service(default_stack):
    deployment = default_stack.objects["Deployment/inference"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == [
        "python", "-m", "inference", "serve", "--host", "0.0.0.0", "--port", "7860",
        "--cache-dir", "/var/cache/trainstack"]
    assert env_of(container)["TRAINSTACK_MODEL_NAME"] == "resnet18-cifar10"
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["ports"] == [{"name": "http", "containerPort": 7860}]
    service = default_stack.objects["Service/inference"]
    assert service["spec"]["type"] == "NodePort"
    assert "sessionAffinity" not in service["spec"]
    scaled = render(
        {**PUSHED, "inferenceReplicas": "3", "inferenceServiceType": "LoadBalancer"})
    assert scaled.objects["Deployment/inference"]["spec"]["replicas"] == 3
    assert scaled.objects["Service/inference"]["spec"]["sessionAffinity"] == "ClientIP"
    assert scaled.objects["Service/inference"]["spec"]["type"] == "LoadBalancer"


def test_minio(default_stack, gpu_stack):
    deployment = default_stack.objects["Deployment/minio"]
    pod = deployment["spec"]["template"]["spec"]
    image = pod["containers"][0]["image"]
    assert image.startswith("quay.io/minio/minio:RELEASE.") and not image.endswith(":latest")
    assert image == (
        "quay.io/minio/minio:RELEASE.2025-04-22T22-12-26Z"
        "@sha256:a1ea29fa28355559ef137d71fc570e508a214ec84ff8083e39bc5428980b015e")
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsUser"] == 10002
    assert {p["containerPort"] for p in pod["containers"][0]["ports"]} == {9000, 9001}
    assert {p["port"] for p in default_stack.objects["Service/minio"]["spec"]["ports"]} == {
        9000, 9001}
    pvc = default_stack.objects["PersistentVolumeClaim/minio-data"]
    assert pvc["spec"]["resources"]["requests"] == {"storage": "10Gi"}
    secret = default_stack.objects["Secret/minio-credentials"]["stringData"]
    assert secret == {"AWS_ACCESS_KEY_ID": "trainstack-admin",
                      "AWS_SECRET_ACCESS_KEY": MOCK_RANDOM_PASSWORD}  # generated: not configured
    gpu_secret = gpu_stack.objects["Secret/minio-credentials"]["stringData"]
    assert gpu_secret["AWS_SECRET_ACCESS_KEY"] == PASSWORD
    assert [r.name for r in gpu_stack.by_type("random:index/randomPassword:RandomPassword")
            ] == ["secret-version-key"]  # no generated MinIO password
    for rendering in (default_stack, gpu_stack):
        assert "minioadmin" not in json.dumps(rendering.objects)


def test_unpushed_image_is_used_by_tag_and_never_pulled():
    rendering = render({"pushImage": "false", "image": "trainstack-trainer"})
    image = rendering.by_type(IMAGE)[0].inputs
    assert image["skipPush"] is True
    for spec in workload_specs(rendering).values():
        container = spec["containers"][0]
        assert container["image"] == image["imageName"] and "@" not in container["image"]
        assert container["imagePullPolicy"] == "Never"


def test_pushed_image_is_used_by_digest(default_stack):
    assert default_stack.by_type(IMAGE)[0].inputs["imageName"].startswith(REGISTRY_IMAGE + ":")
    for key, spec in workload_specs(default_stack).items():
        image = spec["containers"][0]["image"]
        assert image.startswith(REGISTRY_IMAGE + "@sha256:"), key


def test_pushing_a_bare_image_name_stops_before_any_resource():
    """`trainstack-trainer` would be pushed to docker.io/library and fail mid-`pulumi up`."""
    with pytest.raises(ConfigError, match="trainstack:image.*registry path.*pushImage") as err:
        render({})  # the defaults: pushImage true, image trainstack-trainer
    assert "minikube" in str(err.value)


def test_exports(default_stack):
    exports = default_stack.exports
    job = pytorchjob(default_stack)["metadata"]["name"]
    assert exports["namespace"] == "trainstack"
    assert exports["pytorchJobName"] == job
    assert exports["minioEndpoint"] == "minio.trainstack.svc:9000"
    assert exports["store"] == STORE
    assert exports["buckets"] == ["datasets", "models", "metrics", "mlflow"]
    assert "renderedTo" not in exports
    assert exports["inferenceUrl"] == "http://inference.trainstack.svc:7860"
    # Honest for any cluster: kubectl first, the minikube shortcut only as an aside.
    assert exports["inferenceAccess"].startswith("kubectl -n trainstack get svc inference")
    assert "(minikube: minikube service inference -n trainstack --url)" in exports[
        "inferenceAccess"]
    assert exports["followLogs"].startswith(
        f"kubectl -n trainstack logs -f -l training.kubeflow.org/job-name={job}")
    assert f"get pytorchjob {job}" in exports["jobStatus"]


@pytest.mark.parametrize(("service_type", "hint"), [
    ("LoadBalancer", "kubectl -n ml get svc inference   # http://<EXTERNAL-IP>:7860"),
    ("ClusterIP", "kubectl -n ml port-forward svc/inference 7860:7860"),
])
def test_access_hint_follows_the_service_type(service_type, hint):
    exports = render({**PUSHED, "namespace": "ml", "inferenceServiceType": service_type}).exports
    assert exports["inferenceAccess"].startswith(hint)
    assert "minikube" not in exports["inferenceAccess"]


def test_rendering_is_offline(monkeypatch):
    """Mocks never fetch the operator manifests or talk to Docker: block all sockets."""

    def refuse(*_args, **_kwargs):
        raise AssertionError("network access during rendering")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    assert pytorchjob(render({**PUSHED, "workers": "2"}))
