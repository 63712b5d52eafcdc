"""`buildImage false`: no pulumi-docker resource, every pod runs exactly the reference."""

from __future__ import annotations

import logging

import pytest

from tests.infra.infra_helpers import PREBUILT, PREBUILT_IMAGE, pytorchjob, workload_specs
from tests.infra.render import render

DOCKER = "docker:"


@pytest.fixture(scope="module")
def prebuilt():
    return render(PREBUILT)


def test_no_docker_resource_and_no_build_component(prebuilt):
    assert not [r for r in prebuilt.resources.values() if r.type.startswith(DOCKER)]
    assert not prebuilt.by_type("trainstack:index:TrainerImage")


def test_every_pod_runs_exactly_the_reference(prebuilt):
    specs = workload_specs(prebuilt)
    assert {k.split("/")[0] for k in specs} == {"Job", "PyTorchJob", "Deployment"}
    for key, spec in specs.items():
        for container in spec["containers"] + spec.get("initContainers", []):
            assert container["image"] == PREBUILT_IMAGE, key
            assert container["imagePullPolicy"] == "IfNotPresent", key  # a digest never moves


def test_the_job_is_renamed_when_the_reference_changes(prebuilt):
    name = pytorchjob(prebuilt)["metadata"]["name"]
    other = PREBUILT_IMAGE.replace("ab12", "cd34")
    assert pytorchjob(render({**PREBUILT, "image": other}))["metadata"]["name"] != name
    assert pytorchjob(render(PREBUILT))["metadata"]["name"] == name


def test_a_tag_is_accepted_with_a_warning_and_always_pulled(caplog):
    image = "ghcr.io/acme/trainstack:2026.11.1"
    with caplog.at_level(logging.WARNING):
        rendering = render({**PREBUILT, "image": image})
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"trainstack:image {image!r} is a tag, not a digest" in w for w in warnings)
    for key, spec in workload_specs(rendering).items():
        container = spec["containers"][0]
        assert (container["image"], container["imagePullPolicy"]) == (image, "Always"), key


def test_a_digest_gives_no_warning(caplog):
    with caplog.at_level(logging.WARNING):
        render(PREBUILT)
    assert not [r for r in caplog.records if "not a digest" in r.getMessage()]


# Issue 28 #16: a prebuilt image for GPU pods must be the GPU build; the stack says so, and
# tells the trainer how many GPUs its pod has (it stops at start if torch sees fewer).
GPU = {**PREBUILT, "gpusPerWorker": "1"}


def _train_env(rendering) -> dict:
    (container,) = pytorchjob(rendering)["spec"]["pytorchReplicaSpecs"]["Master"]["template"][
        "spec"]["containers"]
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def test_a_prebuilt_image_for_gpus_is_warned_about_with_the_build_arg(caplog):
    with caplog.at_level(logging.WARNING):
        rendering = render(GPU)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("trainstack:gpusPerWorker 1 with buildImage false" in w
               and "TORCH_VARIANT=cu130" in w for w in warnings), warnings
    assert _train_env(rendering)["TRAINSTACK_POD_GPUS"] == "1"


def test_a_cpu_pod_gets_neither_warning_nor_gpu_count(caplog):
    with caplog.at_level(logging.WARNING):
        rendering = render(PREBUILT)
    assert not [r for r in caplog.records if "gpusPerWorker" in r.getMessage()]
    assert "TRAINSTACK_POD_GPUS" not in _train_env(rendering)


def test_an_image_tagged_as_the_cpu_build_is_refused_for_gpus():
    from infra.config.keys import ConfigError

    image = "registry.example.com/team/trainstack-trainer:cpu-0123456789ab"
    with pytest.raises(ConfigError, match=r"trainstack:image .*TORCH_VARIANT=cu130.*'cpu-0123"
                       ) as raised:
        render({**GPU, "image": image})
    assert raised.value.key == "image"
