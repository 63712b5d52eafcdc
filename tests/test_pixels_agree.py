"""Training and serving see the same pixels for the same bytes (issue 9, finding 3).

The same image files go through the trainer's imagefolder reader (as a training run loads
them from the store) and through the app's preprocessing of an upload; the pixels must be
exactly equal, for exactly the pictures where a naive ``convert("RGB")`` goes wrong.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from inference.serving.predict import decode
from trainer.contract.schema import VersionMeta
from trainer.data.loading import load_dataset
from trainer.store import LocalStore

SIZE = 32


def _encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def exif_rotated_jpeg() -> bytes:
    """A phone photo stored on its side: 640x480 pixels with EXIF orientation 6."""
    pixels = np.zeros((480, 640, 3), np.uint8)
    pixels[:, :320] = (220, 40, 40)  # left half red, right half dark blue: not symmetric
    pixels[:, 320:] = (20, 20, 120)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to view
    return _encoded(Image.fromarray(pixels), "JPEG", quality=90, exif=exif)


def transparent_png() -> bytes:
    """A dark shape on a fully transparent background (transparent pixels stored black)."""
    rgba = np.zeros((60, 80, 4), np.uint8)
    rgba[15:45, 20:60] = (30, 60, 90, 255)
    return _encoded(Image.fromarray(rgba, "RGBA"), "PNG")


def sixteen_bit_png() -> bytes:
    """A 16-bit greyscale ramp over the full 0..65535 range."""
    ramp = np.tile(np.linspace(0, 65535, 96), (64, 1)).astype(np.uint16)
    image = Image.fromarray(ramp)  # uint16 -> mode "I;16"
    assert image.mode == "I;16"
    return _encoded(image, "PNG")


def palette_png() -> bytes:
    """A palette image with a transparent palette entry."""
    rgb = Image.new("RGB", (50, 40), (250, 200, 0))
    rgb.paste((0, 90, 200), (10, 10, 40, 30))
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    return _encoded(palette, "PNG", transparency=0)


IMAGES = {"exif": exif_rotated_jpeg, "alpha": transparent_png, "deep": sixteen_bit_png,
          "palette": palette_png}
EXTENSIONS = {"exif": "jpg", "alpha": "png", "deep": "png", "palette": "png"}


@pytest.fixture(scope="module")
def served_meta() -> VersionMeta:
    meta = {"model": "m", "dataset": "imagefolder", "version": "20260101T000000Z-x",
            "run_id": "x", "classes": sorted(IMAGES), "input_size": [3, SIZE, SIZE],
            "mean": [0.5] * 3, "std": [0.25] * 3, "train_config": {},
            "created_at": "2026-01-01T00:00:00Z",
            "metrics": {"test_acc": 0.5, "test_loss": 1.0, "epochs": 1, "train_seconds": 1.0}}
    return VersionMeta.from_json(json.dumps(meta))


def test_imagefolder_reader_and_app_give_exactly_the_same_pixels(tmp_path, served_meta):
    store = LocalStore(tmp_path / "store")
    store.ensure_buckets()
    files = {name: make() for name, make in IMAGES.items()}
    # One class per kind of picture, in train/ and test/, so each row is found by its label.
    for split in ("train", "test"):
        for name, data in files.items():
            store.put_bytes(f"datasets/agree/{split}/{name}/0.{EXTENSIONS[name]}", data)
    bundle = load_dataset("imagefolder", store, prefix="datasets/agree", image_size=SIZE)
    assert bundle.classes == sorted(IMAGES)
    for split in (bundle.train, bundle.test):
        for row, label in zip(split.images.numpy(), split.labels.tolist()):
            name = bundle.classes[label]
            served = decode(files[name], served_meta)
            assert served.dtype == np.uint8 and served.shape == (3, SIZE, SIZE)
            assert np.array_equal(row, served), (
                f"{name}: trainer and app pixels differ, mean abs difference "
                f"{np.abs(row.astype(int) - served.astype(int)).mean():.1f}/255")


def test_the_pictures_are_ones_a_naive_decode_gets_wrong(served_meta):
    """Guard for the test above: each picture must differ from convert("RGB").resize()."""
    for name, make in IMAGES.items():
        data = make()
        with Image.open(io.BytesIO(data)) as image:
            naive = np.asarray(image.convert("RGB").resize((SIZE, SIZE),
                                                           Image.Resampling.BILINEAR))
        served = decode(data, served_meta).transpose(1, 2, 0)
        assert np.abs(naive.astype(int) - served.astype(int)).mean() > 10, name


def test_a_new_pixels_revision_is_new_data_for_the_run_identity(tmp_path, monkeypatch):
    """The imagefolder's pixels are what training computes on: when the pixels function
    changes what it makes of the same files (pixels.REVISION bumped), a run must not resume
    or republish the old run's checkpoints, so the data fingerprint changes with it."""
    from trainer.data import pixels

    store = LocalStore(tmp_path / "store")
    store.ensure_buckets()
    for name, make in IMAGES.items():
        store.put_bytes(f"datasets/agree/{name}/0.{EXTENSIONS[name]}", make())
        store.put_bytes(f"datasets/agree/{name}/1.{EXTENSIONS[name]}", make())
    before = load_dataset("imagefolder", store, prefix="datasets/agree").fingerprint
    assert before.endswith(f"+pixels@{pixels.REVISION}")
    monkeypatch.setattr(pixels, "REVISION", pixels.REVISION + 1)
    assert load_dataset("imagefolder", store, prefix="datasets/agree").fingerprint != before
