"""``python -m inference demo-check``: ``make demo``'s knobs, checked before it starts
anything (buckets, ingest, torchrun, the app).

A wrong knob would otherwise surface minutes later, or as an argparse line buried in
torchrun's output on every rank. Each error is one line naming the knob, the value given
and what is allowed. The port is bound and released: taken, the demo stops before
training rather than after it. On success it prints the dataset's name (the only line on
stdout, for the Makefile): the kind, or for an image folder ``imagefolder-<label>``, the
label from DATASET_NAME or the folder's own name: two folders are two datasets, whose
models never mix under one name.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import math
import re
import sys
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from inference.edge.listening import ServeError, listen
from trainer.contract.config import BENCHMARK_DATASETS, DATASETS, MODELS, TrainConfig
from trainer.contract.datasets import DATASET_LABEL_RULE, FOLDER_KIND, folder_dataset_name
from trainer.contract.errors import ConfigError

log = logging.getLogger("make demo")

DEMO_DATASETS = tuple(d for d in DATASETS if d not in BENCHMARK_DATASETS)
NEEDS_SOURCE = ("imagefolder",)
SERVE_VALUES = ("yes", "no")  # the Makefile serves on "yes" only
TAKES_SOURCE = ("cifar10", "imagefolder")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".zip")


class DemoKnobError(Exception):
    """A knob of `make demo` that cannot work: one line for the user."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Every knob as the Makefile gives it: a string, checked here, not by argparse."""
    for knob in ("dataset", "dataset-name", "model", "epochs", "batch-size", "lr", "seed",
                 "host", "port", "source", "serve"):
        parser.add_argument(f"--{knob}", default="")


def _integer(knob: str, value: str, low: int, high: int | None = None) -> int:
    try:
        number = int(value)
    except ValueError:
        number = None
    if number is None or number < low or (high is not None and number > high):
        allowed = f"an integer from {low} to {high}" if high is not None else \
            f"an integer >= {low}"
        raise DemoKnobError(f"{knob}={value!r}: allowed: {allowed}")
    return number


def _positive(knob: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not (math.isfinite(number) and number > 0):
        raise DemoKnobError(f"{knob}={value!r}: allowed: a number > 0 (e.g. 0.1)")
    return number


def folder_label(source: str) -> str:
    """A dataset label from the last part of SOURCE (``~/photos/``, ``photos.zip``,
    ``https://host/photos.tar.gz``: ``photos``); a short hash of it if nothing is left."""
    if "://" in source:
        stem = PurePosixPath(urlsplit(source).path).name
    else:
        stem = Path(source).expanduser().resolve().name
    for suffix in ARCHIVE_SUFFIXES:
        if stem.lower().endswith(suffix):
            stem = stem[:-len(suffix)]
    label = re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-")[:40].strip("-")
    return label or f"folder-{hashlib.sha256(source.encode()).hexdigest()[:8]}"


def dataset_name(args: argparse.Namespace) -> str:
    """The dataset's name (see the module docstring); DemoKnobError if it cannot be one."""
    if args.dataset != FOLDER_KIND:
        if args.dataset_name:
            raise DemoKnobError(f"DATASET_NAME={args.dataset_name!r} names an image folder; "
                                f"DATASET={args.dataset} has one name, {args.dataset}")
        return args.dataset
    if args.dataset_name == FOLDER_KIND:  # the one name of stores made before names
        return FOLDER_KIND
    label = args.dataset_name or folder_label(args.source)
    label = label[len(FOLDER_KIND) + 1:] if label.startswith(f"{FOLDER_KIND}-") else label
    try:
        return folder_dataset_name(label)
    except ValueError:
        raise DemoKnobError(f"DATASET_NAME={args.dataset_name!r}: allowed: "
                            f"{DATASET_LABEL_RULE} (the dataset is then imagefolder-<label>), "
                            "or imagefolder (the one image folder of older demo stores)"
                            ) from None


def check_knobs(args: argparse.Namespace) -> str:
    """The dataset's name; DemoKnobError for the first knob that cannot work."""
    if args.dataset not in DEMO_DATASETS:
        raise DemoKnobError(f"DATASET={args.dataset!r} is not a dataset `make demo` trains; "
                            f"allowed: {', '.join(DEMO_DATASETS)} (your own images: "
                            "DATASET=imagefolder SOURCE=path/to/folder-or-archive)")
    if args.dataset in NEEDS_SOURCE and not args.source:
        raise DemoKnobError(f"DATASET={args.dataset} needs SOURCE=path/to/folder-or-archive "
                            "(one subfolder per class, or a .zip/.tar.gz of them)")
    if args.source and args.dataset not in TAKES_SOURCE:
        raise DemoKnobError(f"SOURCE={args.source!r} is not used by DATASET={args.dataset} "
                            "(the default): DATASET=imagefolder SOURCE=... trains on your own "
                            "images, DATASET=cifar10 SOURCE=... on a copy of CIFAR-10")
    if args.serve not in SERVE_VALUES:
        raise DemoKnobError(f"SERVE={args.serve!r}: allowed: {', '.join(SERVE_VALUES)}")
    if args.model not in MODELS:
        raise DemoKnobError(f"MODEL={args.model!r}: allowed: {', '.join(MODELS)}")
    name = dataset_name(args)
    values = {"dataset": args.dataset, "dataset_name": name, "model": args.model,
              "epochs": _integer("EPOCHS", args.epochs, 1),
              "batch_size": _integer("BATCH_SIZE", args.batch_size, 1),
              "lr": _positive("LR", args.lr), "seed": _integer("SEED", args.seed, 0)}
    try:
        TrainConfig.from_dict(values)  # the combination, as training will check it
    except ConfigError as e:
        raise DemoKnobError(str(e)) from None
    port = _integer("PORT", args.port, 0, 65535)
    try:
        listen(args.host, port).close()
    except ServeError as e:
        raise DemoKnobError(str(e)) from None
    return name


def main(args: argparse.Namespace) -> int:
    try:
        name = check_knobs(args)
    except DemoKnobError as e:
        log.error("%s", e)
        return 2
    sys.stdout.write(f"{name}\n")  # what the Makefile reads: not a log line
    return 0
