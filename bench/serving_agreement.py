"""What the app's shortcuts cost in answers, measured on a trained model and real photos.

1. bf16: test accuracy of the published model on the CIFAR-10 test images, fp32 vs
   bf16 (the app's ``--precision bf16`` Runner), and how many predictions change.
2. Reduced decode: every test image scaled up to photo sizes and saved as a JPEG, then
   classified from ``trainer.data.pixels.to_pixels`` (DCT-scaled decode, integer reduce, one
   resize) and from a full decode (every pixel decoded, one bilinear resize): the share of
   images given the same class, and the mean pixel difference; for scale, the same for
   the app's decode before trainer.data.pixels existed (full decode, resize with reducing_gap 3).

Needs a store holding a model trained on cifar10 and the ingested archive, e.g.::

    python -m trainer ingest --store /tmp/s --dataset cifar10 --source cifar-10-python.tar.gz
    python -m trainer train --store /tmp/s --dataset cifar10 --model resnet18 --epochs 8
    python bench/serving_agreement.py --store /tmp/s --model-name resnet18-cifar10
"""

from __future__ import annotations

import argparse
import io
import logging
import sys

import numpy as np
import torch
from PIL import Image

log = logging.getLogger("bench.serving_agreement")

PHOTO_SIZES = [(640, 480), (1600, 1200), (4032, 3024)]


def load(store_url: str, model_name: str):
    from inference.published.registry import Registry
    from trainer.data.loading import load_dataset
    from trainer.store import open_store

    store = open_store(store_url)
    registry = Registry(store, __import__("tempfile").mkdtemp(), model_name)
    registry.check_once()
    if registry.current is None:
        raise SystemExit(f"no loadable version of {model_name} in {store_url}")
    return registry.current, load_dataset("cifar10", store).test


def classify(version, pixels: np.ndarray, bf16: bool, batch: int = 128) -> np.ndarray:
    from inference.serving.runner import Runner

    runner = Runner(version, "bf16" if bf16 else "fp32")
    probs = [runner(list(pixels[i:i + batch])) for i in range(0, len(pixels), batch)]
    return np.concatenate([np.asarray(p) for p in probs]).argmax(axis=1)


def full_decode(data: bytes, shape) -> np.ndarray:
    """The reference: every pixel decoded, converted, one bilinear resize."""
    channels, height, width = shape
    with Image.open(io.BytesIO(data)) as image:
        image = image.convert("RGB" if channels == 3 else "L")
        image = image.resize((width, height), Image.Resampling.BILINEAR)
        return np.asarray(image, np.uint8).reshape(height, width, channels).transpose(2, 0, 1)


def full_decode_gap3(data: bytes, shape) -> np.ndarray:
    """For scale: the app's decode before trainer.data.pixels (full decode, reducing_gap=3)."""
    channels, height, width = shape
    with Image.open(io.BytesIO(data)) as image:
        image = image.convert("RGB" if channels == 3 else "L")
        image = image.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=3.0)
        return np.asarray(image, np.uint8).reshape(height, width, channels).transpose(2, 0, 1)


def photo_jpeg(pixels: np.ndarray, size: tuple[int, int]) -> bytes:
    """A CIFAR image scaled up (bicubic) to a photo's size, saved as a camera would."""
    image = Image.fromarray(pixels.transpose(1, 2, 0)).resize(size, Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def precision_figures(version, images: np.ndarray, labels: np.ndarray) -> None:
    fp32 = classify(version, images, bf16=False)
    bf16 = classify(version, images, bf16=True)
    log.info("test accuracy on %d images: fp32 %.2f%%, bf16 %.2f%% (%+.2f points); "
             "%d predictions differ", len(labels), 100 * (fp32 == labels).mean(),
             100 * (bf16 == labels).mean(), 100 * ((bf16 == labels).mean() - (fp32 == labels).mean()),
             int((fp32 != bf16).sum()))


def decode_figures(version, images: np.ndarray, limit: int) -> None:
    from trainer.data.pixels import to_pixels

    shape = tuple(version.meta.input_size)
    for size in PHOTO_SIZES:
        jpegs = [photo_jpeg(img, size) for img in images[:limit]]
        full = np.stack([full_decode(data, shape) for data in jpegs])
        reference = classify(version, full, False)
        for what, decoder in (("reduced decode (to_pixels)", to_pixels),
                              ("old app decode (gap 3)", full_decode_gap3)):
            pixels = np.stack([decoder(data, shape) for data in jpegs])
            same = (classify(version, pixels, False) == reference).mean()
            diff = np.abs(pixels.astype(np.int16) - full.astype(np.int16)).mean()
            log.info("%dx%d JPEGs: %s vs full decode: same class on %.2f%% of %d images; "
                     "mean |pixel difference| %.2f / 255", *size, what, 100 * same,
                     len(jpegs), diff)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("--model-name", default="resnet18-cifar10")
    parser.add_argument("--photos", type=int, default=1017, help="test images per photo size")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    version, test = load(args.store, args.model_name)
    images, labels = test.images.numpy(), test.labels.numpy()
    log.info("model %s version %s", version.name, version.version)
    precision_figures(version, images, labels)
    if args.photos:
        decode_figures(version, images, args.photos)
    return 0


if __name__ == "__main__":
    sys.exit(main())
