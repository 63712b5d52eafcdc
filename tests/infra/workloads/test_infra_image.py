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
