"""`renderYamlTo`: one render-mode provider for every Kubernetes object, no Secret written
by the stack, and what a GitOps tool needs to apply the files in Pulumi's order."""

from __future__ import annotations

import json

import pytest

from infra.gitops import SYNC_WAVE
from infra.operators.training_operator import OPERATOR_NAMESPACE
from tests.infra.infra_helpers import (
    PASSWORD,
    PUSHED,
    RENDERED,
    RENDERED_EXTERNAL,
    S3_SECRET_KEY,
    env_of,
    secret_ref,
    workload_specs,
)
from tests.infra.render import MOCK_RANDOM_PASSWORD, render

PROVIDER = "pulumi:providers:kubernetes"
FORCE = {"argocd.argoproj.io/sync-options": "Force=true,Replace=true",
         "kustomize.toolkit.fluxcd.io/force": "enabled"}


RENDER_CONFIGS = {"minio": RENDERED, "external": RENDERED_EXTERNAL,
                  "trainjob": {**RENDERED, "trainingApi": "trainjob"}}


@pytest.fixture(scope="module", params=sorted(RENDER_CONFIGS))
def rendered(request):
    return render(RENDER_CONFIGS[request.param])


def kubernetes_resources(rendering):
    return [r for r in rendering.resources.values()
            if r.custom and r.type.startswith("kubernetes:")]


def test_one_render_provider_used_by_every_kubernetes_resource(rendered):
    (provider,) = rendered.by_type(PROVIDER)
    assert provider.inputs["renderYamlToDirectory"] == rendered.exports["renderedTo"]
    assert provider.inputs["alwaysRender"] in (True, "true")  # every file rewritten per up
    assert not {"context", "cluster", "kubeconfig"} & set(provider.inputs)
    resources = kubernetes_resources(rendered)
    assert len(resources) == len(rendered.objects) >= 7  # external store: no MinIO objects
    for r in resources:
        assert r.provider_urn == provider.urn, f"{r.type} {r.name} bypasses the render provider"


def test_the_check_can_fail_a_default_provider_is_seen():
    """Without renderYamlTo every object uses the default provider: the test above would fail."""
    rendering = render(PUSHED)
    assert rendering.by_type(PROVIDER) == []
    assert all(r.provider_urn == "" for r in kubernetes_resources(rendering))


def test_no_secret_is_written_and_credentials_come_from_the_named_secret(rendered):
    assert not [k for k in rendered.objects if k.startswith("Secret/")]
    assert not rendered.by_type("random:index/randomPassword:RandomPassword")
    text = json.dumps(rendered.objects)
    for secret in (PASSWORD, S3_SECRET_KEY, MOCK_RANDOM_PASSWORD, "stringData"):
        assert secret not in text
    name = RENDERED.get("storeCredentialsSecret") if "Deployment/minio" in rendered.objects \
        else RENDERED_EXTERNAL["storeCredentialsSecret"]
    for key, spec in workload_specs(rendered).items():
        env = env_of(spec["containers"][0])
        assert env["AWS_SECRET_ACCESS_KEY"] == secret_ref(name, "AWS_SECRET_ACCESS_KEY"), key


def test_no_operator_overlay_in_render_mode(rendered):
    assert rendered.by_type("kubernetes:kustomize/v2:Directory") == []
    assert rendered.by_type("trainstack:index:TrainingOperator") == []
    assert rendered.by_type("trainstack:index:TrainerV2") == []


def wave(obj) -> int:
    return int(obj["metadata"]["annotations"][SYNC_WAVE])


def test_sync_waves_follow_what_pulumi_would_wait_for(rendered):
    """Argo CD applies wave N+1 only when wave N is healthy (a Job: complete). Every Job,
    and MinIO's Deployment, is in an earlier wave than whatever depends on it."""
    by_urn = {r.urn: r for r in kubernetes_resources(rendered)}
    for r in by_urn.values():
        obj = rendered.objects[f"{r.inputs['kind']}/{r.inputs['metadata']['name']}"]
        for dep in set(r.dependencies) & set(by_urn):
            before = by_urn[dep].inputs
            must_precede = before["kind"] == "Job" or (
                before["kind"], before["metadata"]["name"]) == ("Deployment", "minio")
            if must_precede:
                assert wave(obj) > wave(before), f"{r.name} is not after {before['metadata']}"
            assert wave(obj) >= wave(before), f"{r.name} before {before['metadata']}"
    jobs = {k: wave(o) for k, o in rendered.objects.items()
            if o["kind"] in ("Job", "PyTorchJob", "TrainJob")}
    ingest = jobs["Job/trainstack-ingest-cifar10"]
    assert jobs["Job/trainstack-buckets"] < ingest < max(jobs.values())


def test_jobs_are_replaced_by_gitops_tools_other_objects_are_not(rendered):
    for key, obj in rendered.objects.items():
        annotations = obj["metadata"].get("annotations", {})
        if obj["kind"] == "Job":
            assert FORCE.items() <= annotations.items(), key
        else:
            assert not set(FORCE) & set(annotations), key


def test_render_mode_only_changes_annotations_and_provider():
    """The same stack applied or rendered: identical objects but for GitOps annotations
    (and the operator's own, which render mode leaves to the GitOps tool)."""
    applied = render({**RENDERED, "renderYamlTo": "", "installTrainingOperator": "true"})
    rendered = render(RENDERED)

    def strip(objects):
        out = {key: obj for key, obj in json.loads(json.dumps(objects)).items()
               if obj["metadata"].get("namespace") != OPERATOR_NAMESPACE}
        for obj in out.values():
            annotations = obj["metadata"].get("annotations", {})
            for key in [SYNC_WAVE, *FORCE]:
                annotations.pop(key, None)
            if not annotations:
                obj["metadata"].pop("annotations", None)
        return out

    assert strip(rendered.objects) == strip(applied.objects)
    assert not any(SYNC_WAVE in o["metadata"].get("annotations", {})
                   for o in applied.objects.values())


def test_a_built_image_is_pushed_and_rendered_by_digest():
    rendering = render({**PUSHED, "renderYamlTo": "out", "installTrainingOperator": "false",
                        "storeCredentialsSecret": "minio-sealed"})
    (image,) = rendering.by_type("docker:index/image:Image")
    assert image.inputs["skipPush"] is False and image.provider_urn == ""
    for spec in workload_specs(rendering).values():
        assert "@sha256:" in spec["containers"][0]["image"]
