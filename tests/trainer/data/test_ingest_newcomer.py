"""Issue 24: ingest refuses what training refuses, before it overwrites the stored dataset,
and its errors name the user's own path (not store keys) and the accepted layouts."""

from __future__ import annotations

import shutil

import pytest

from tests.trainer.image_trees import image_tree
from trainer.contract.errors import DatasetError, IngestError, TrainstackError
from trainer.data.imagefolder import imagefolder_keys, load_imagefolder
from trainer.data.ingest import ingest
from trainer.data.ingest_folder import PREFIX


@pytest.fixture
def local_store(local_store):
    local_store.ensure_buckets()
    return local_store


def test_a_folder_of_one_class_is_refused_before_the_stored_dataset_is_replaced(
        local_store, tmp_path):
    ingest(local_store, "imagefolder", str(image_tree(tmp_path / "good")))
    before = imagefolder_keys(local_store, PREFIX).manifest
    one_class = image_tree(tmp_path / "shapes", classes=("cat",))
    with pytest.raises(DatasetError) as err:
        ingest(local_store, "imagefolder", str(one_class))
    message = str(err.value)
    assert str(one_class) in message and "'cat'" in message and "at least 2" in message
    assert PREFIX not in message  # the user's folder, not the store's key
    assert imagefolder_keys(local_store, PREFIX).manifest == before
    load_imagefolder(local_store, PREFIX, image_size=8, seed=0)  # still trains


def test_the_reader_refuses_one_class_with_the_same_rule(local_store, tmp_path):
    for path in image_tree(tmp_path / "one", classes=("dog",)).rglob("*.png"):
        local_store.put_file(f"{PREFIX}/{path.relative_to(tmp_path / 'one').as_posix()}", path)
    with pytest.raises(DatasetError, match=r"datasets/imagefolder: found 1 class \['dog'\]"):
        load_imagefolder(local_store, PREFIX, image_size=8, seed=0)


def test_a_folder_with_nothing_to_hold_out_is_refused_at_ingest(local_store, tmp_path):
    singles = image_tree(tmp_path / "singles", classes=("cat", "dog"), per_class=1)
    with pytest.raises(DatasetError, match="nothing to test on"):
        ingest(local_store, "imagefolder", str(singles))
    assert not local_store.list(PREFIX + "/")


def test_a_missing_path_says_it_does_not_exist(local_store, tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(IngestError) as err:
        ingest(local_store, "imagefolder", str(missing))
    assert f"'{missing}' does not exist" in str(err.value)


def test_an_empty_folder_names_the_folder_and_both_layouts(local_store, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(TrainstackError) as err:
        ingest(local_store, "imagefolder", str(empty))
    message = str(err.value)
    assert f"no images under '{empty}'" in message
    assert f"{empty}/<class>/<image>" in message
    assert f"{empty}/train/<class>/<image> and {empty}/test/<class>/<image>" in message
    assert PREFIX not in message


def test_train_and_test_folders_are_kept_as_given(local_store, tmp_path):
    root = tmp_path / "split"
    image_tree(root / "train", per_class=3)
    image_tree(root / "test", per_class=1, seed=1)
    ingest(local_store, "imagefolder", str(root))
    bundle = load_imagefolder(local_store, PREFIX, image_size=8, seed=0)
    assert (len(bundle.train.labels), len(bundle.test.labels)) == (6, 2)
    shutil.rmtree(root / "test")
    with pytest.raises(DatasetError, match="needs both train/ and test/"):
        ingest(local_store, "imagefolder", str(root))
