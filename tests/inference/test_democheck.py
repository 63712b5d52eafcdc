"""Issue 28 #13: `make demo` names an image folder's dataset after the folder (or
DATASET_NAME), so two folders are two datasets; the name is what the Makefile reads."""

from __future__ import annotations

import argparse

import pytest

from inference.democheck import DemoKnobError, dataset_name, folder_label


def knobs(dataset: str = "imagefolder", source: str = "", name: str = "") -> argparse.Namespace:
    return argparse.Namespace(dataset=dataset, source=source, dataset_name=name)


@pytest.mark.parametrize("source, label", [
    ("~/Pictures/My Flowers/", "my-flowers"),
    ("/data/pets.tar.gz", "pets"),
    ("archive.TGZ", "archive"),
    ("https://user:pw@example.org/sets/birds.zip?sig=x", "birds"),
])
def test_a_folder_is_named_after_itself(source, label):
    assert folder_label(source) == label
    assert dataset_name(knobs(source=source)) == f"imagefolder-{label}"


def test_a_name_nothing_is_left_of_is_a_hash_of_the_source():
    assert folder_label("/data/照片").startswith("folder-")
    assert folder_label("/data/照片") != folder_label("/other/照片")


def test_dataset_name_overrides_and_imagefolder_reads_older_stores():
    assert dataset_name(knobs(source="/a/photos", name="holidays")) == "imagefolder-holidays"
    assert dataset_name(knobs(source="/a/photos", name="imagefolder-holidays")) == \
        "imagefolder-holidays"
    assert dataset_name(knobs(source="/a/photos", name="imagefolder")) == "imagefolder"
    assert dataset_name(knobs(dataset="digits")) == "digits"
    with pytest.raises(DemoKnobError, match="DATASET_NAME='Holidays!': allowed: 1-40"):
        dataset_name(knobs(source="/a/photos", name="Holidays!"))
    with pytest.raises(DemoKnobError, match="DATASET=cifar10 has one name, cifar10"):
        dataset_name(knobs(dataset="cifar10", name="pets"))
