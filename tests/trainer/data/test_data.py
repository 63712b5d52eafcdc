"""Dataset readers: exact decoding of the CIFAR-10 format, clear errors, other datasets."""

from __future__ import annotations

import hashlib
import io
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.trainer.cifar_fixtures import (
    BATCHES,
    CLASSES,
    archive_bytes,
    expected_images,
    make_batches,
)
from trainer.contract.errors import DatasetError
from trainer.contract.layout import MANIFEST_NAME, cifar10_key
from trainer.data import cifar
from trainer.data.loading import DATASETS, channel_stats, load_dataset

CIFAR10_KEY = cifar10_key()
from trainer.contract.errors import ObjectNotFound

REPO = Path(__file__).resolve().parents[3]
SAMPLE = Path("/work/shared/data/cifar10-sample/cifar-10-python.tar.gz")


@pytest.fixture(scope="module")
def batches():
    return make_batches(per_class=2)


def _put_cifar(store, data: bytes) -> None:
    store.ensure_buckets()
    store.put_bytes(CIFAR10_KEY, data)


def test_cifar10_reads_generated_archive_exactly(any_store, batches):
    _put_cifar(any_store, archive_bytes(batches))
    bundle = load_dataset("cifar10", any_store)

    train_x, train_y = expected_images(batches, BATCHES[:5])
    test_x, test_y = expected_images(batches, ["test_batch"])
    assert bundle.name == "cifar10" and bundle.classes == CLASSES
    assert bundle.train.images.shape == (100, 3, 32, 32) and bundle.test.images.shape == (20, 3, 32, 32)
    assert bundle.train.images.dtype == torch.uint8 and bundle.train.labels.dtype == torch.int64
    assert bundle.train.images.is_contiguous() and bundle.test.images.is_contiguous()
    np.testing.assert_array_equal(bundle.train.images.numpy(), train_x)
    np.testing.assert_array_equal(bundle.train.labels.numpy(), train_y)
    np.testing.assert_array_equal(bundle.test.images.numpy(), test_x)
    np.testing.assert_array_equal(bundle.test.labels.numpy(), test_y)
    # Row layout: the first 1024 bytes are the red plane, row by row.
    assert bundle.train.images[0, 0, 1, 0] == batches["data_batch_1"][0][0, 32]
    assert bundle.train.images[0, 2, 0, 0] == batches["data_batch_1"][0][0, 2048]
    assert len(bundle.mean) == len(bundle.std) == 3


def test_cifar10_reads_str_keys_too(local_store, batches):
    """Re-packed archives (Python 3) use str keys; they are the same format."""
    data, labels = batches["test_batch"]
    str_batch = pickle.dumps({"labels": labels, "data": data}, protocol=4)
    _put_cifar(local_store, archive_bytes(batches, override={"test_batch": str_batch}))
    bundle = load_dataset("cifar10", local_store)
    np.testing.assert_array_equal(bundle.test.labels.numpy(), labels)


def _error_for(raw: bytes) -> str:
    with pytest.raises(DatasetError) as exc:
        cifar.read_archive(io.BytesIO(raw), "upload.tar.gz")
    assert "upload.tar.gz" in str(exc.value)
    return str(exc.value)


def test_truncated_archive_is_a_clear_error(batches):
    raw = archive_bytes(batches)
    message = _error_for(raw[: len(raw) // 2])
    assert "not a complete gzip-compressed tar archive" in message
    assert "cifar-10-python.tar.gz" in message


def test_non_gzip_file_is_a_clear_error():
    assert "not a complete gzip-compressed tar archive" in _error_for(b"<html>Not Found</html>" * 50)


def test_missing_member_is_named(batches):
    message = _error_for(archive_bytes(batches, drop="test_batch"))
    assert "missing cifar-10-batches-py/test_batch" in message


def test_wrong_data_shape_is_named(batches):
    bad = pickle.dumps({b"labels": [0, 1], b"data": np.zeros((2, 1024), np.uint8)}, protocol=2)
    message = _error_for(archive_bytes(batches, override={"data_batch_3": bad}))
    assert "data_batch_3" in message and "(2, 1024)" in message and "N x 3072" in message


def test_labels_out_of_range_are_named(batches):
    bad = pickle.dumps({b"labels": [0, 10], b"data": np.zeros((2, 3072), np.uint8)}, protocol=2)
    message = _error_for(archive_bytes(batches, override={"test_batch": bad}))
    assert "test_batch" in message and "expected 0..9" in message


def test_wrong_class_names_are_named(batches):
    assert "10 class names" in _error_for(archive_bytes(batches, label_names=["a", "b"]))


class _Boom:
    def __reduce__(self):
        return (print, ("code ran while unpickling",))


def test_pickle_cannot_run_code(batches, capsys):
    evil = pickle.dumps({b"labels": [0], b"data": _Boom()}, protocol=2)
    message = _error_for(archive_bytes(batches, override={"data_batch_1": evil}))
    assert "refusing to load" in message and "print" in message
    assert "code ran" not in capsys.readouterr().out


def test_missing_cifar10_object_says_how_to_ingest(local_store):
    local_store.ensure_buckets()
    with pytest.raises(ObjectNotFound, match="python -m trainer ingest --dataset cifar10"):
        load_dataset("cifar10", local_store)


@pytest.mark.skipif(not SAMPLE.is_file(), reason="real CIFAR-10 sample not present")
def test_real_cifar10_sample(local_store):
    _put_cifar(local_store, SAMPLE.read_bytes())
    bundle = load_dataset("cifar10", local_store)
    assert (len(bundle.train), len(bundle.test)) == (5170, 1017)
    assert bundle.classes[0] == "airplane" and bundle.classes[-1] == "truck"
    assert int(bundle.train.labels.max()) == 9


def test_digits_shapes_and_deterministic_stratified_split():
    bundle = load_dataset("digits", None, seed=3)
    assert bundle.classes == [str(d) for d in range(10)]
    assert bundle.train.images.shape[1:] == (1, 8, 8) and bundle.train.images.dtype == torch.uint8
    assert len(bundle.train) + len(bundle.test) == 1797
    assert 0.18 < len(bundle.test) / 1797 < 0.22
    assert int(bundle.train.images.max()) == 255 and len(bundle.mean) == len(bundle.std) == 1
    assert torch.bincount(bundle.test.labels).min() >= 30  # every class held out
    again = load_dataset("digits", None, seed=3)
    assert torch.equal(again.test.images, bundle.test.images)
    assert torch.equal(again.test.labels, bundle.test.labels)
    other = load_dataset("digits", None, seed=4)
    assert not torch.equal(other.test.images, bundle.test.images)


def test_synthetic_shapes_and_determinism():
    bundle = load_dataset("synthetic", None, synthetic_size=64, seed=1)
    assert bundle.train.images.shape == (64, 3, 32, 32) and len(bundle.test) >= 10
    assert bundle.train.labels.dtype == torch.int64 and len(bundle.classes) == 10
    assert torch.equal(bundle.train.images, load_dataset("synthetic", None, synthetic_size=64,
                                                         seed=1).train.images)


def _png(color, size=(12, 9), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")
    return buf.getvalue()


def _fill_folder(store, prefix: str, per_class: int = 10) -> None:
    store.ensure_buckets()
    for cls, color in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
        for i in range(per_class):
            store.put_bytes(f"{prefix}/{cls}/{i}.png", _png(color))


def test_imagefolder_from_store_prefix(any_store):
    _fill_folder(any_store, "datasets/pets")
    any_store.put_bytes("datasets/pets/dog/gray.png", _png(128, mode="L"))  # converted to RGB
    bundle = load_dataset("imagefolder", any_store, prefix="datasets/pets", image_size=16)
    assert bundle.classes == ["cat", "dog"]
    assert bundle.train.images.shape[1:] == (3, 16, 16)
    assert len(bundle.train) + len(bundle.test) == 21 and 2 <= len(bundle.test) <= 4
    assert set(bundle.test.labels.tolist()) == {0, 1}
    cats = bundle.train.images[bundle.train.labels == 0]
    assert (cats[:, 0] == 255).all() and (cats[:, 2] == 0).all()
    assert len(bundle.mean) == 3 and 0 < bundle.mean[0] < 1


def test_imagefolder_uses_train_test_folders(local_store):
    _fill_folder(local_store, "datasets/pets/train", per_class=3)
    _fill_folder(local_store, "datasets/pets/test", per_class=1)
    bundle = load_dataset("imagefolder", local_store, prefix="datasets/pets", image_size=8)
    assert (len(bundle.train), len(bundle.test)) == (6, 2)
    assert bundle.test.labels.tolist() == [0, 1]


def test_imagefolder_non_image_is_named(local_store):
    _fill_folder(local_store, "datasets/pets", per_class=2)
    local_store.put_bytes("datasets/pets/cat/notes.txt", b"hello")
    with pytest.raises(DatasetError, match="datasets/pets/cat/notes.txt: not an image"):
        load_dataset("imagefolder", local_store, prefix="datasets/pets")
    (local_store.root / "datasets/pets/cat/notes.txt").unlink()
    local_store.put_bytes("datasets/pets/dog/broken.png", b"\x89PNG not really")
    with pytest.raises(DatasetError, match="datasets/pets/dog/broken.png: cannot be decoded"):
        load_dataset("imagefolder", local_store, prefix="datasets/pets")


def test_unknown_dataset_lists_choices():
    with pytest.raises(DatasetError, match=", ".join(DATASETS)):
        load_dataset("mnist", None)
    with pytest.raises(DatasetError, match="no store"):
        load_dataset("cifar10", None)


def _write_manifest(store, prefix: str, keys: list[str]) -> None:
    lines = [f"{hashlib.sha256(store.get_bytes(k)).hexdigest()}  {k[len(prefix) + 1:]}\n"
             for k in keys]
    store.put_bytes(f"{prefix}/{MANIFEST_NAME}", "".join(lines).encode())


def test_imagefolder_with_a_manifest_reads_only_the_listed_files(local_store):
    _fill_folder(local_store, "datasets/pets", per_class=3)
    _write_manifest(local_store, "datasets/pets",
                    [f"datasets/pets/{c}/{i}.png" for c in ("cat", "dog") for i in (0, 1)])
    local_store.put_bytes("datasets/pets/cow/0.png", _png((0, 255, 0)))  # not listed
    bundle = load_dataset("imagefolder", local_store, prefix="datasets/pets", image_size=8)
    assert bundle.classes == ["cat", "dog"] and len(bundle.train) + len(bundle.test) == 4


def test_imagefolder_half_uploaded_over_its_manifest_is_a_clear_error(local_store):
    """An ingest overwriting files before it writes the new manifest: never train on a mix."""
    _fill_folder(local_store, "datasets/pets", per_class=2)
    _write_manifest(local_store, "datasets/pets", local_store.list("datasets/pets/"))
    local_store.put_bytes("datasets/pets/dog/1.png", _png((9, 9, 9)))
    with pytest.raises(DatasetError, match="dog/1.png: content differs from its .manifest"):
        load_dataset("imagefolder", local_store, prefix="datasets/pets")
    local_store.put_bytes("datasets/pets/.manifest.sha256", b"not a manifest\n")
    with pytest.raises(DatasetError, match="line 1: expected"):
        load_dataset("imagefolder", local_store, prefix="datasets/pets")


def test_config_module_imports_without_torch():
    """The Pulumi program imports DATASETS/MODELS/CIFAR10_URL from it and has no torch."""
    code = ("import sys, trainer.contract.config as c, trainer.models.zoo as m, trainer.data.loading as d; "
            "assert m.MODELS is c.MODELS and d.DATASETS is c.DATASETS")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
    code = ("import sys, trainer.contract.config; "
            "assert not [n for n in sys.modules if n.split('.')[0] in ('torch', 'numpy')]")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_imagefolder_decompression_bomb_is_a_dataset_error_naming_the_file(local_store):
    """Tiny on disk, 225 megapixels decoded: PIL refuses it, the trainer names it."""
    _fill_folder(local_store, "datasets/pets", per_class=2)
    buf = io.BytesIO()
    Image.new("1", (15_000, 15_000)).save(buf, format="PNG")
    local_store.put_bytes("datasets/pets/dog/bomb.png", buf.getvalue())
    with pytest.raises(DatasetError, match="datasets/pets/dog/bomb.png: .*pixels"):
        load_dataset("imagefolder", local_store, prefix="datasets/pets")


def test_imagefolder_larger_than_its_memory_limit_is_refused_before_decoding(local_store):
    _fill_folder(local_store, "datasets/pets", per_class=10)  # 20 x 3 x 64 x 64 = 245,760 bytes
    with pytest.raises(DatasetError, match=r"20 images of 3x64x64 decode to 245,760 bytes.*"
                                           r"limit of 100,000 bytes.*image_size"):
        load_dataset("imagefolder", local_store, prefix="datasets/pets", image_size=64,
                     max_decoded_bytes=100_000)
    bundle = load_dataset("imagefolder", local_store, prefix="datasets/pets", image_size=64,
                          max_decoded_bytes=245_760)
    assert len(bundle.train) + len(bundle.test) == 20


def test_channel_stats_are_exact_for_uint8_images():
    images = torch.randint(0, 256, (50, 3, 9, 7), dtype=torch.uint8)
    x = images.transpose(0, 1).reshape(3, -1).double() / 255
    mean, std = channel_stats(images)
    assert mean == tuple(round(v, 6) for v in x.mean(1).tolist())
    assert std == tuple(round(v, 6) for v in x.std(1, correction=0).tolist())
    flat = torch.full((4, 1, 2, 2), 9, dtype=torch.uint8)
    assert channel_stats(flat) == ((round(9 / 255, 6),), (1.0,))  # constant: left unscaled


def test_cifar10_replaced_behind_the_ingests_back_is_a_clear_error(local_store, batches):
    """The digest the ingest wrote next to the archive must be the archive's: an ingest
    uploading a new archive (digest not yet written) never trains as the old run."""
    old = archive_bytes(batches)
    _put_cifar(local_store, old)
    local_store.put_bytes(CIFAR10_KEY + ".sha256",
                          f"{hashlib.sha256(old).hexdigest()}  x\n".encode())
    assert load_dataset("cifar10", local_store).fingerprint == \
        f"sha256:{hashlib.sha256(old).hexdigest()}"
    local_store.put_bytes(CIFAR10_KEY, archive_bytes(make_batches(per_class=2, seed=9)))
    with pytest.raises(DatasetError, match="not what the ingest recorded"):
        load_dataset("cifar10", local_store)


def test_imagefolder_fingerprint_is_the_manifests_and_follows_the_content(local_store):
    _fill_folder(local_store, "datasets/pets", per_class=3)
    by_hand = load_dataset("imagefolder", local_store, prefix="datasets/pets").fingerprint
    _write_manifest(local_store, "datasets/pets", local_store.list("datasets/pets/"))
    manifest = local_store.get_bytes(f"datasets/pets/{MANIFEST_NAME}")
    listed = load_dataset("imagefolder", local_store, prefix="datasets/pets").fingerprint
    assert listed == by_hand == f"sha256:{hashlib.sha256(manifest).hexdigest()}+pixels@1"
    local_store.put_bytes("datasets/pets/cat/0.png", _png((1, 2, 3)))
    (local_store.root / "datasets/pets" / MANIFEST_NAME).unlink()
    assert load_dataset("imagefolder", local_store, prefix="datasets/pets").fingerprint != listed
