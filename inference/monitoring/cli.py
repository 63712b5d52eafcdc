"""``python -m inference monitor``: one drift check of the served version, from the store.

Reads the version's reference and its newest windows (every replica's), checks them,
writes the report next to the app's and prints one line:

    drift=<true|false> estimated_accuracy=<x> n=<predictions>

Exit 0 with a verdict; 1 with one line when there is nothing to check (no version, no
reference, too few predictions) or the store cannot be read.
"""

from __future__ import annotations

import argparse
import logging
import os

from inference.monitoring.drift import ALPHA, NoData, check
from inference.monitoring.recorder import replica_name
from inference.monitoring.records import (
    read_reference,
    recent_windows,
    report_key,
    served_version,
)
from trainer.contract.errors import ObjectNotFound, TrainstackError
from trainer.store import open_store

log = logging.getLogger(__name__)
DEFAULT_WINDOWS = 4


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", default=os.environ.get("TRAINSTACK_STORE"),
                        help="s3://HOST:PORT or a local directory [$TRAINSTACK_STORE]")
    parser.add_argument("--model", required=True, help="<model>-<dataset>, e.g. fastcifar-cifar10")
    parser.add_argument("--version", default=None,
                        help="the version to check [the one latest.json names]")
    parser.add_argument("--windows", type=int, default=DEFAULT_WINDOWS,
                        help=f"the newest windows checked together [{DEFAULT_WINDOWS}]")
    parser.add_argument("--alpha", type=float, default=ALPHA,
                        help=f"significance after the correction for many tests [{ALPHA}]")


def main(args: argparse.Namespace) -> int:
    if not args.store:
        log.error("no store given: pass --store or set TRAINSTACK_STORE")
        return 1
    if args.windows < 1 or not 0 < args.alpha < 1:
        log.error("--windows must be >= 1 and --alpha between 0 and 1")
        return 1
    try:
        store = open_store(args.store)
        version = args.version or served_version(store, args.model)
        reference = read_reference(store, args.model, version)
        if reference is None:
            raise NoData(f"{args.model} version {version} has no monitoring reference (it was "
                         "published before references existed): nothing to compare with; "
                         "the next version will have one")
        windows = recent_windows(store, args.model, version, args.windows)
        report = check(reference, windows, model=args.model, version=version,
                       alpha=args.alpha)
        store.put_bytes(report_key(report, f"cli-{replica_name()}"), report.to_json())
    except ObjectNotFound as e:
        log.error("%s: nothing published to check (%s)", args.model, e)
        return 1
    except TrainstackError as e:
        log.error("%s", e)
        return 1
    print(report.verdict())  # the one line a script reads (stdout, not the log)
    if report.fired:
        log.info("tests that fired: %s", ", ".join(report.fired))
    return 0
