"""Small accessors over rendered manifests, and the stack configs the tests share."""

from __future__ import annotations

import copy
import re
from typing import Any

from tests.infra.render import Rendering

PASSWORD = "cfg-secret-password-4b9d2e"  # as `pulumi config set --secret minioRootPassword`
# pushImage defaults to true, which needs a registry path: a user of a real cluster sets
# `image` and keeps the other defaults. Renderings of "the defaults" start from this.
IMAGE = "registry.example.com/team/trainstack-trainer"
PUSHED = {"image": IMAGE}
DIGEST = "sha256:" + "ab12" * 16
PREBUILT_IMAGE = f"123456789012.dkr.ecr.eu-west-1.amazonaws.com/ml/trainstack@{DIGEST}"
PREBUILT = {"buildImage": "false", "image": PREBUILT_IMAGE}
S3_SECRET_KEY = "cfg-s3-secret-key-9f8e7d6c5b4a"  # as `pulumi config set --secret storeSecretKey`
# EKS-style: an image by digest from CI, AWS S3 with a bucket prefix, the team's own Secret.
EXTERNAL = {**PREBUILT, "storeEndpoint": "https://s3.eu-west-1.amazonaws.com",
            "storeRegion": "eu-west-1", "storeCredentialsSecret": "team-s3",
            "bucketPrefix": "acme-ml-"}
# The stack makes the Secret from an access key and a secret key (Ceph over plain HTTP).
EXTERNAL_KEYS = {**PUSHED, "storeEndpoint": "http://ceph.storage.svc:7480",
                 "storeAccessKey": "AKIAEXAMPLE", "storeSecretKey": S3_SECRET_KEY}
# GitOps: YAML instead of a cluster, the in-cluster MinIO with credentials from a Secret
# the user made (a SealedSecret, say).
RENDERED = {**PREBUILT, "renderYamlTo": "rendered", "installTrainingOperator": "false",
            "storeCredentialsSecret": "minio-sealed"}
RENDERED_EXTERNAL = {**EXTERNAL, "renderYamlTo": "/srv/gitops/trainstack",
                     "installTrainingOperator": "false"}


def versioned(rendering: Rendering, kind: str, name: str) -> str:
    """The name of the object `<name>-<digest>` of `kind`: a Secret or ConfigMap named by a
    digest of its content (infra/workloads/rotation.py)."""
    found = [o["metadata"]["name"] for o in rendering.objects.values() if o["kind"] == kind
             and re.fullmatch(rf"{re.escape(name)}-[0-9a-f]{{16}}", o["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name}-<digest>, got {found}"
    return found[0]


def one(rendering: Rendering, kind: str) -> dict[str, Any]:
    found = [v for k, v in rendering.objects.items() if k.startswith(f"{kind}/")]
    assert len(found) == 1, f"expected one {kind}, got {[k for k in rendering.objects]}"
    return found[0]


def pytorchjob(rendering: Rendering) -> dict[str, Any]:
    return one(rendering, "PyTorchJob")


def pod_specs(rendering: Rendering) -> dict[str, dict[str, Any]]:
    """Every pod spec: Deployments, Jobs, CronJobs' Jobs, each PyTorchJob replica, a
    TrainJob's pod."""
    specs = {}
    for key, obj in rendering.objects.items():
        if obj["kind"] in ("Deployment", "Job"):
            specs[key] = obj["spec"]["template"]["spec"]
        elif obj["kind"] == "CronJob":
            specs[key] = obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        elif obj["kind"] == "PyTorchJob":
            for rtype, replica in obj["spec"]["pytorchReplicaSpecs"].items():
                specs[f"{key}/{rtype}"] = replica["template"]["spec"]
        elif obj["kind"] == "TrainJob":
            specs[f"{key}/node"] = trainjob_pods(rendering.objects, obj, per_job=True)[0]["spec"]
    return specs


# Servers of their own images (MinIO, MLflow): the trainer image runs in every other pod.
OTHER_IMAGES = ("Deployment/minio", "Deployment/mlflow")


def workload_specs(rendering: Rendering) -> dict[str, dict[str, Any]]:
    """The pod specs that run the trainer image (every one but MinIO's and MLflow's)."""
    return {k: v for k, v in pod_specs(rendering).items() if k not in OTHER_IMAGES}


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def secret_ref(secret: str, key: str) -> dict[str, Any]:
    return {"secretKeyRef": {"name": secret, "key": key}}


def minio_credentials(rendering: Rendering) -> dict[str, tuple[str, str]]:
    """What MinIO's root user and password are read from: {"MINIO_ROOT_USER": (Secret name,
    key), ...}, followed from its *_FILE env vars through the mounts to the Secret volume."""
    spec = rendering.objects["Deployment/minio"]["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    found = {}
    for var in ("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"):
        path = env_of(container)[f"{var}_FILE"]
        for mount in container["volumeMounts"]:
            if path.startswith(mount["mountPath"].rstrip("/") + "/"):
                secret = volumes[mount["name"]]["secret"]
                rel = path[len(mount["mountPath"].rstrip("/")) + 1:]
                (key,) = [i["key"] for i in secret["items"] if i["path"] == rel]
                found[var] = (secret["secretName"], key)
    return found


# What the Training Operator (v1.8) adds to the pods it creates from a replica's template.
OPERATOR_LABEL = "training.kubeflow.org/"


def replica_pods(job: dict[str, Any], per_type: bool = False) -> list[dict[str, Any]]:
    """The Pods the operator creates for a PyTorchJob (`<job>-master-0`, `<job>-worker-N`):
    the replica's template with the operator's labels; `per_type`: index 0 of each type."""
    name, namespace = job["metadata"]["name"], job["metadata"]["namespace"]
    pods = []
    for rtype, replica in job["spec"]["pytorchReplicaSpecs"].items():
        kind = rtype.lower()
        for index in range(1 if per_type else replica.get("replicas", 1)):
            labels = {**replica["template"]["metadata"]["labels"],
                      f"{OPERATOR_LABEL}operator-name": "pytorchjob-controller",
                      f"{OPERATOR_LABEL}job-name": name,
                      f"{OPERATOR_LABEL}replica-type": kind,
                      f"{OPERATOR_LABEL}replica-index": str(index)}
            if kind == "master":
                labels[f"{OPERATOR_LABEL}job-role"] = "master"
            pods.append({"apiVersion": "v1", "kind": "Pod",
                         "metadata": {"name": f"{name}-{kind}-{index}", "namespace": namespace,
                                      "labels": labels},
                         "spec": replica["template"]["spec"]})
    return pods


# What Trainer v2 (v2.3.0) and JobSet make of a TrainJob on its TrainingRuntime, by our
# reading of their sources (tests/cluster compares it with what the real controllers make).
JOBSET_LABEL = "jobset.sigs.k8s.io/"


def _merge_named(base: list[dict], patch: list[dict]) -> list[dict]:
    """A strategic merge of lists keyed by `name` (containers, volumes, env)."""
    merged = {item["name"]: dict(item) for item in base}
    for item in patch:
        merged[item["name"]] = {**merged.get(item["name"], {}), **item}
    return list(merged.values())


def trainjob_pods(objects: dict[str, dict[str, Any]], job: dict[str, Any],
                  per_job: bool = False) -> list[dict[str, Any]]:
    """The Pods of a TrainJob (`<job>-node-0-<rank>`, PET_* env not included): the runtime's
    pod template, spec.trainer on container `node`, then the runtime patches;
    `per_job`: rank 0 only."""
    name, namespace = job["metadata"]["name"], job["metadata"]["namespace"]
    runtime = objects[f"TrainingRuntime/{job['spec']['runtimeRef']['name']}"]
    (rjob,) = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    template = rjob["template"]["spec"]["template"]
    spec = copy.deepcopy(template["spec"])
    trainer = job["spec"]["trainer"]
    for container in spec["containers"]:
        if container["name"] == "node":
            container.update(image=trainer["image"], command=trainer["command"],
                             env=trainer.get("env", []), resources=trainer["resourcesPerNode"])
    for patch in job["spec"].get("runtimePatches", []):
        for rpatch in patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]:
            pod_patch = copy.deepcopy(rpatch["template"]["spec"]["template"]["spec"])
            spec["containers"] = _merge_named(spec["containers"], pod_patch.pop("containers", []))
            spec["volumes"] = _merge_named(spec.get("volumes", []), pod_patch.pop("volumes", []))
            spec.update(pod_patch)
    pods = []
    for rank in range(1 if per_job else trainer["numNodes"]):
        labels = {**template["metadata"]["labels"], f"{JOBSET_LABEL}jobset-name": name,
                  f"{JOBSET_LABEL}replicatedjob-name": "node",
                  "batch.kubernetes.io/job-completion-index": str(rank)}
        pods.append({"apiVersion": "v1", "kind": "Pod",
                     "metadata": {"name": f"{name}-node-0-{rank}", "namespace": namespace,
                                  "labels": labels},
                     "spec": spec})
    return pods
