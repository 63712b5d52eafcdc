"""Rendered objects against the Kubernetes schemas, the Training Operator SDK, and policy."""

from __future__ import annotations

import json
from types import SimpleNamespace

import kubernetes_validate
import pytest
from kubeflow.training import ApiClient
from kubeflow.training.models import KubeflowOrgV1PyTorchJob

from tests.infra.infra_helpers import (
    EXTERNAL,
    EXTERNAL_KEYS,
    PASSWORD,
    PREBUILT,
    PUSHED,
    RENDERED,
    RENDERED_EXTERNAL,
    S3_SECRET_KEY,
    pod_specs,
    pytorchjob,
    trainjob_pods,
)
from tests.infra.render import MOCK_RANDOM_PASSWORD, render

K8S_VERSION = "1.34.0"
AUTH_TOKEN = "manifest-app-token-0123456789abcdef"  # as `pulumi config set --secret`  # kubernetes-validate 1.37.0 ships schemas up to 1.37

CONFIGS = {
    "defaults": PUSHED,
    "gpu": {**PUSHED, "workers": "3", "gpusPerWorker": "2", "minioRootPassword": PASSWORD,
            "nodeSelector": '{"nvidia.com/gpu.present": "true"}',
            "tolerations": '[{"key": "dedicated", "operator": "Equal", "value": "ml", '
                           '"effect": "NoExecute", "tolerationSeconds": 60}]'},
    "single": {"workers": "1", "inferenceReplicas": "2", "inferenceServiceType": "ClusterIP",
               "pushImage": "false", "minioStorageClass": "standard", "dataset": "digits",
               "model": "smallcnn", "cpuPerWorker": "500m", "memoryPerWorker": "1536Mi"},
    "prebuilt": {**PREBUILT, "bucketPrefix": "team-a-", "ingestStorage": "10Gi"},
    "external": EXTERNAL,
    "external-keys": {**EXTERNAL_KEYS, "dataset": "imagefolder",
                      "datasetSource": "https://example.com/photos.tar.gz"},
    "rendered": RENDERED,
    "rendered-external": RENDERED_EXTERNAL,
    "fenced": {**PUSHED, "networkPolicy": "ingress-egress", "inferenceServiceType": "ClusterIP",
               "inferenceIngressNamespace": "ingress-nginx", "inferenceAuthToken": AUTH_TOKEN},
    # Retraining (issue 30): the CronJobs, their Role, the manifest ConfigMap.
    "retrain": {**EXTERNAL_KEYS, "dataset": "imagefolder",
                "datasetSource": "https://example.com/photos.tar.gz",
                "retrainSchedule": "30 2 * * MON-FRI", "monitoring": "prometheus-operator",
                "retrainOnDrift": "true", "promotionTolerance": "0.5"},
}
# The same configurations on Kubeflow Trainer v2 (a TrainJob on the stack's runtime).
CONFIGS.update({f"{name}-trainjob": {**CONFIGS[name], "trainingApi": "trainjob"}
                for name in ("gpu", "single", "external-keys", "rendered", "fenced", "retrain")})


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def rendering(request):
    return render(CONFIGS[request.param])


def test_every_kubernetes_object_passes_strict_schema_validation(rendering):
    for key, obj in rendering.objects.items():
        if obj["kind"] == "PyTorchJob":
            # A CRD: no upstream schema; its pod templates are checked as PodTemplates.
            for rtype, replica in obj["spec"]["pytorchReplicaSpecs"].items():
                kubernetes_validate.validate(
                    {"apiVersion": "v1", "kind": "PodTemplate",
                     "metadata": {"name": f"{obj['metadata']['name']}-{rtype.lower()}"},
                     "template": replica["template"]},
                    K8S_VERSION, strict=True)
            continue
        if obj["kind"] in ("ServiceMonitor", "PrometheusRule"):
            continue  # the Prometheus Operator's CRDs: tests/cluster/test_monitoring.py
        if obj["kind"] in ("TrainJob", "TrainingRuntime"):
            # CRDs: the pods the controller makes of both are checked as Pods.
            if obj["kind"] == "TrainJob":
                for pod in trainjob_pods(rendering.objects, obj, per_job=True):
                    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
            continue
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{key} fails the Kubernetes {K8S_VERSION} schema: {e}")


def test_strict_validation_catches_a_typo():
    obj = render(PUSHED).objects["Deployment/inference"]
    obj["spec"]["replicaz"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def _prune(value):
    """Drop None/empty values the SDK adds for absent optional fields."""
    if isinstance(value, dict):
        return {k: _prune(v) for k, v in value.items() if v not in (None, [], {})}
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value


def test_pytorchjob_round_trips_through_the_training_sdk(rendering):
    if "TrainJob" in {o["kind"] for o in rendering.objects.values()}:
        pytest.skip("a trainingApi trainjob rendering (tests/infra/workloads/test_infra_trainjob.py)")
    job = pytorchjob(rendering)
    client = ApiClient()
    response = SimpleNamespace(data=json.dumps(job))
    model = client.deserialize(response, "KubeflowOrgV1PyTorchJob")
    assert isinstance(model, KubeflowOrgV1PyTorchJob)
    assert _prune(client.sanitize_for_serialization(model)) == _prune(job)
    assert set(model.spec.pytorch_replica_specs) <= {"Master", "Worker"}
    assert model.spec.pytorch_replica_specs["Master"].replicas == 1


def _all_strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _all_strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _all_strings(v)


def test_no_secret_value_in_plain_text(rendering):
    secrets = {PASSWORD, MOCK_RANDOM_PASSWORD, S3_SECRET_KEY, AUTH_TOKEN}
    for key, obj in rendering.objects.items():
        if obj["kind"] == "Secret":
            continue
        text = json.dumps(obj)
        assert not any(s in text for s in secrets), f"secret value in {key}"
        for container in pod_specs(rendering).get(key, {}).get("containers", []):
            for env in container.get("env", []):
                if env["name"] in ("AWS_SECRET_ACCESS_KEY", "TRAINSTACK_AUTH_TOKEN"):
                    assert "value" not in env and "secretKeyRef" in env["valueFrom"]
    assert not any(s in v for v in _all_strings(rendering.exports) for s in secrets)
    # Every non-Secret input of every resource (annotations, component inputs too).
    for registration in rendering.resources.values():
        if registration.inputs.get("kind") != "Secret":
            assert not any(s in json.dumps(registration.inputs) for s in secrets)
    for secret in rendering.by_type("kubernetes:core/v1:Secret"):  # none: the user's Secret
        assert secret.secret_props == ["stringData"]  # stored encrypted in the Pulumi state


def test_every_container_is_bounded_and_unprivileged(rendering):
    for key, spec in pod_specs(rendering).items():
        pod_ctx = spec.get("securityContext", {})
        assert pod_ctx.get("runAsNonRoot") is True, key
        for container in spec["containers"] + spec.get("initContainers", []):
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), key
            assert {"cpu", "memory"} <= set(resources["limits"]), key
            ctx = container["securityContext"]
            assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] > 0, key
            assert ctx["allowPrivilegeEscalation"] is False, key
            assert ctx["capabilities"]["drop"] == ["ALL"], key
            assert not ctx.get("privileged"), key


def test_training_pods_have_guaranteed_resources(rendering):
    specs = [s for key, s in pod_specs(rendering).items()
             if key.startswith(("PyTorchJob/", "TrainJob/"))]
    assert specs
    for spec in specs:
        resources = spec["containers"][0]["resources"]
        assert resources["requests"] == resources["limits"]
