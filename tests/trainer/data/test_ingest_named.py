"""Issue 28 #13: two image folders are two datasets. Each gets a name of its own
(``imagefolder-<label>``): its own store prefix and its own model name, so their versions
never mix; another folder under a name already taken is refused, and a replacement that
is allowed (the stack's one ``imagefolder``) says what it replaces."""

from __future__ import annotations

import logging

import pytest

from tests.trainer.image_trees import image_tree
from trainer.contract.config import RunIdentity, TrainConfig
from trainer.contract.datasets import folder_dataset_name
from trainer.contract.errors import ConfigError, IngestError
from trainer.contract.layout import SOURCE_NAME
from trainer.data.imagefolder import load_imagefolder
from trainer.data.ingest import ingest
from trainer.data.ingest_folder import PREFIX, source_origin


@pytest.fixture
def local_store(local_store):
    local_store.ensure_buckets()
    return local_store


def test_two_folders_under_two_names_are_two_datasets(local_store, tmp_path):
    colours = image_tree(tmp_path / "colours", classes=("cat", "dog", "bird"))
    pets = image_tree(tmp_path / "pets", classes=("cat", "dog"), seed=1)
    first = ingest(local_store, "imagefolder", str(colours), name="imagefolder-colours")
    second = ingest(local_store, "imagefolder", str(pets), name="imagefolder-pets")
    assert (first, second) == ("datasets/imagefolder-colours", "datasets/imagefolder-pets")
    assert load_imagefolder(local_store, first, image_size=8, seed=0).classes == \
        ["bird", "cat", "dog"]
    assert load_imagefolder(local_store, second, image_size=8, seed=0).classes == ["cat", "dog"]
    assert not local_store.list(PREFIX + "/")  # the stack's dataset is left alone
    assert local_store.get_bytes(f"{first}/{SOURCE_NAME}").decode() == str(colours)


def test_another_folder_under_a_taken_name_is_refused_and_nothing_is_replaced(
        local_store, tmp_path):
    colours = image_tree(tmp_path / "a" / "photos", classes=("cat", "dog", "bird"))
    others = image_tree(tmp_path / "b" / "photos", classes=("cat", "dog"), seed=1)
    prefix = ingest(local_store, "imagefolder", str(colours), name="imagefolder-photos")
    with pytest.raises(IngestError) as err:
        ingest(local_store, "imagefolder", str(others), name="imagefolder-photos")
    message = str(err.value)
    assert "dataset imagefolder-photos" in message and "18 images of 3 classes" in message
    assert str(colours) in message and str(others) in message
    assert "DATASET_NAME=" in message and "--replace" in message and "\n" not in message
    assert load_imagefolder(local_store, prefix, image_size=8, seed=0).classes == \
        ["bird", "cat", "dog"]  # before: silently the other folder's two classes


def test_a_replacement_that_is_allowed_says_what_it_replaces(local_store, tmp_path, caplog):
    colours = image_tree(tmp_path / "colours", classes=("cat", "dog", "bird"))
    pets = image_tree(tmp_path / "pets", classes=("cat", "dog"), seed=1)
    ingest(local_store, "imagefolder", str(colours))  # the stack's one image folder
    with caplog.at_level(logging.WARNING, "trainer.data.ingest_folder"):
        ingest(local_store, "imagefolder", str(pets))  # its datasetSource changed
    warning = next(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert warning.startswith("replacing dataset imagefolder in ")
    assert f"18 images of 3 classes (bird, cat, dog) from {colours}" in warning
    assert f"become 12 images of 2 classes (cat, dog) from {pets}" in warning
    # The same folder, edited: its own name's images are replaced, with the same warning.
    caplog.clear()
    ingest(local_store, "imagefolder", str(colours), name="imagefolder-colours")
    image_tree(colours, classes=("cat",), per_class=8, seed=2)
    with caplog.at_level(logging.WARNING, "trainer.data.ingest_folder"):
        ingest(local_store, "imagefolder", str(colours), name="imagefolder-colours")
    assert "replacing dataset imagefolder-colours" in caplog.text
    ingest(local_store, "imagefolder", str(pets), name="imagefolder-colours", replace=True)


def test_a_url_source_is_recorded_without_its_credentials():
    origin = source_origin("https://user:s3cret@example.org:8443/data/photos.zip?X-Sig=abc")
    assert origin == "https://example.org:8443/data/photos.zip"


def test_a_dataset_name_names_the_model_and_the_data_but_not_the_run():
    plain = TrainConfig(dataset="imagefolder", model="smallcnn")
    named = TrainConfig(dataset="imagefolder", model="smallcnn",
                        dataset_name=folder_dataset_name("pets"))
    assert (plain.model_name, plain.data_location) == (
        "smallcnn-imagefolder", "datasets/imagefolder")
    assert (named.model_name, named.data_location) == (
        "smallcnn-imagefolder-pets", "datasets/imagefolder-pets")
    # Runs configured before names existed keep their run_id (and stay published).
    assert "dataset_name" not in plain.defining_fields()
    assert RunIdentity(plain, "sha256:x", "smallcnn@1").run_id == "7cc9ba6ce9"  # as before
    for kind, name in (("cifar10", "imagefolder-pets"), ("imagefolder", "cifar10"),
                       ("imagefolder", "imagefolder-Pets"), ("imagefolder", "imagefolder-")):
        with pytest.raises(ConfigError, match="dataset_name"):
            TrainConfig(dataset=kind, dataset_name=name)
    with pytest.raises(IngestError, match="--dataset-name 'imagefolder-a/b'"):
        ingest(None, "imagefolder", "x", name="imagefolder-a/b")
