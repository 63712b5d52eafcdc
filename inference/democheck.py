"""``python -m inference demo-check``: ``make demo``'s knobs, checked before it starts
anything (buckets, ingest, torchrun, the app).

A wrong knob would otherwise surface minutes later, or as an argparse line buried in
torchrun's output on every rank. Each error is one line naming the knob, the value given
and what is allowed. The port is bound and released: taken, the demo stops before
training rather than after it.
"""

from __future__ import annotations

import argparse
import logging
import math

from inference.edge.listening import ServeError, listen
from trainer.contract.config import BENCHMARK_DATASETS, DATASETS, MODELS, TrainConfig
from trainer.contract.errors import ConfigError

log = logging.getLogger("make demo")

DEMO_DATASETS = tuple(d for d in DATASETS if d not in BENCHMARK_DATASETS)
NEEDS_SOURCE = ("imagefolder",)
SERVE_VALUES = ("yes", "no")  # the Makefile serves on "yes" only


class DemoKnobError(Exception):
    """A knob of `make demo` that cannot work: one line for the user."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Every knob as the Makefile gives it: a string, checked here, not by argparse."""
    for knob in ("dataset", "model", "epochs", "batch-size", "lr", "host", "port", "source",
                 "serve"):
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


def check_knobs(args: argparse.Namespace) -> None:
    """Raise DemoKnobError for the first knob that cannot work."""
    if args.dataset not in DEMO_DATASETS:
        raise DemoKnobError(f"DATASET={args.dataset!r} is not a dataset `make demo` trains; "
                            f"allowed: {', '.join(DEMO_DATASETS)} (your own images: "
                            "DATASET=imagefolder SOURCE=path/to/folder-or-archive)")
    if args.dataset in NEEDS_SOURCE and not args.source:
        raise DemoKnobError(f"DATASET={args.dataset} needs SOURCE=path/to/folder-or-archive "
                            "(one subfolder per class, or a .zip/.tar.gz of them)")
    if args.serve not in SERVE_VALUES:
        raise DemoKnobError(f"SERVE={args.serve!r}: allowed: {', '.join(SERVE_VALUES)}")
    if args.model not in MODELS:
        raise DemoKnobError(f"MODEL={args.model!r}: allowed: {', '.join(MODELS)}")
    values = {"dataset": args.dataset, "model": args.model,
              "epochs": _integer("EPOCHS", args.epochs, 1),
              "batch_size": _integer("BATCH_SIZE", args.batch_size, 1),
              "lr": _positive("LR", args.lr)}
    try:
        TrainConfig.from_dict(values)  # the combination, as training will check it
    except ConfigError as e:
        raise DemoKnobError(str(e)) from None
    port = _integer("PORT", args.port, 0, 65535)
    try:
        listen(args.host, port).close()
    except ServeError as e:
        raise DemoKnobError(str(e)) from None


def main(args: argparse.Namespace) -> int:
    try:
        check_knobs(args)
    except DemoKnobError as e:
        log.error("%s", e)
        return 2
    return 0
