"""``python -m inference traffic``: send a running app pictures of the served model's own
dataset, or shifted ones, to see monitoring react (``make demo-traffic``).

``--shift none`` sends test-split images (what the model was trained for: the Monitoring
tab stays green); ``dark`` the same images at 40% brightness, ``noise`` with Gaussian noise
(sigma 40 of 255), ``other`` another dataset's images (scikit-learn's digits for an image
model, uniform random pixels for the digits model). The app checks every window of
predictions (256 by default), so a few hundred images show a verdict.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

log = logging.getLogger(__name__)
SHIFTS = ("none", "dark", "noise", "other")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default="http://127.0.0.1:7860",
                        help="the app's address [http://127.0.0.1:7860]")
    parser.add_argument("--store", default=os.environ.get("TRAINSTACK_STORE"),
                        help="the store the app serves from (the dataset is read there) "
                             "[$TRAINSTACK_STORE]")
    parser.add_argument("--shift", choices=SHIFTS, default="none",
                        help="none: the dataset as trained; dark, noise or other: shifted [none]")
    parser.add_argument("--count", type=int, default=512, help="images to send [512]")
    parser.add_argument("--clients", type=int, default=8, help="requests at once [8]")
    parser.add_argument("--seed", type=int, default=0)


def shifted(images: np.ndarray, shift: str, rng: np.random.Generator) -> np.ndarray:
    """``uint8`` N x C x H x W images, darker or noisier."""
    if shift == "dark":
        return (images * 0.4).astype(np.uint8)
    if shift == "noise":
        return np.clip(images + rng.normal(0, 40, images.shape), 0, 255).astype(np.uint8)
    if shift == "none":
        return images
    raise ValueError(f"unknown shift {shift!r}")


def other_dataset(n: int, shape: list[int] | tuple[int, ...], dataset: str,
                  seed: int) -> np.ndarray:
    """``n`` images of another dataset than ``dataset``, at ``shape`` (C x H x W)."""
    from PIL import Image

    from trainer.data.loading import load_dataset

    other = "synthetic" if dataset == "digits" else "digits"
    images = load_dataset(other, None, image_size=max(shape[1:]), seed=seed).train.images
    images = images.numpy()[np.random.default_rng(seed).integers(0, len(images), n)]
    mode = "L" if shape[0] == 1 else "RGB"
    resized = [np.asarray(Image.fromarray(im[0] if im.shape[0] == 1 else im.transpose(1, 2, 0))
                          .convert(mode).resize((shape[2], shape[1]))) for im in images]
    stacked = np.stack(resized)
    return stacked[:, None] if shape[0] == 1 else stacked.transpose(0, 3, 1, 2)


def png(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)).save(
        buffer, format="PNG")
    return buffer.getvalue()


def pictures(args: argparse.Namespace, dataset: str, shape: list[int]) -> np.ndarray:
    from trainer.contract.datasets import dataset_kind
    from trainer.contract.layout import dataset_prefix
    from trainer.data.loading import load_dataset
    from trainer.store import open_store

    rng = np.random.default_rng(args.seed)
    if args.shift == "other":
        return other_dataset(args.count, shape, dataset, args.seed)
    kind = dataset_kind(dataset)  # meta.json names the dataset: imagefolder-<label> is one
    store = open_store(args.store) if kind in ("cifar10", "imagefolder") else None
    test = load_dataset(kind, store, prefix=dataset_prefix(dataset), image_size=shape[-1],
                        seed=0).test.images.numpy()
    return shifted(test[rng.integers(0, len(test), args.count)], args.shift, rng)


def main(args: argparse.Namespace) -> int:
    import httpx

    headers = {}
    token = os.environ.get("TRAINSTACK_AUTH_TOKEN")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    from inference.published.versions import read_meta
    from trainer.contract.errors import TrainstackError
    from trainer.store import open_store

    if not args.store:
        log.error("no store given: pass --store (the one the app serves from) or set "
                  "TRAINSTACK_STORE")
        return 1
    try:
        ready = httpx.get(f"{args.url}/readyz", timeout=10).json()
    except (httpx.HTTPError, ValueError) as e:
        log.error("the app at %s does not answer (%s): start it with make demo first",
                  args.url, e)
        return 1
    if ready.get("status") != "ready":
        log.error("the app at %s serves no model yet: %s", args.url, ready)
        return 1
    try:
        meta = read_meta(open_store(args.store), ready["model"], ready["version"])
        bodies = [png(image) for image in pictures(args, meta.dataset, meta.input_size)]
    except TrainstackError as e:
        log.error("%s", e)
        return 1

    def send(body: bytes) -> int:
        return httpx.post(f"{args.url}/predict", files={"file": ("x.png", body, "image/png")},
                          headers=headers, timeout=60).status_code

    with ThreadPoolExecutor(args.clients) as pool:
        statuses = list(pool.map(send, bodies))
    answered = sum(s == 200 for s in statuses)
    log.info("sent %d images (shift: %s) to %s version %s: %d answered; the app checks "
             "every window of predictions: see its Monitoring tab", len(bodies), args.shift,
             ready["model"], ready["version"], answered)
    return 0 if answered == len(bodies) else 1
