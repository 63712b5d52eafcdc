"""`python -m trainer {buckets,ingest,train,promote,retrain}`: argument parsing and dispatch
only."""

from __future__ import annotations

import argparse
import json
import logging
import os
from typing import Any

from trainer.contract.config import AUGMENTATIONS, DATASETS, MODELS, TrainConfig
from trainer.contract.env import DATASET_SOURCE_ENV
from trainer.contract.errors import ConfigError, IngestError
from trainer.contract.layout import ALL_BUCKETS, BUCKET_PREFIX_ENV, BUCKETS, TRACKING_BUCKET
from trainer.contract.lifecycle.promotion import GateSettings
from trainer.contract.lifecycle.retrain import REASONS
from trainer.store import STORE_ENV, open_store

log = logging.getLogger(__name__)

# train flags that map onto TrainConfig keys (flag --batch-size -> key batch_size)
TRAIN_FLAGS = ("dataset", "dataset_name", "model", "epochs", "batch_size", "lr", "seed",
               "retrain_id", "retrain_reason", "retrain_report")
NAME_HELP = ("imagefolder: the dataset's own name, imagefolder-<label> (its data under "
             "datasets/<name>, its models <model>-<name>); default: imagefolder")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trainer",
        description="trainstack trainer: set up buckets, ingest datasets, train and publish.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    store_help = f"s3://HOST:PORT (s3s:// for TLS) or a local directory; default ${STORE_ENV}"

    buckets = sub.add_parser("buckets", help="create the store's buckets if missing",
                             description="Create the buckets datasets, models, metrics "
                                         "(idempotent); an S3 store prefixes their names "
                                         f"with ${BUCKET_PREFIX_ENV}.")
    buckets.add_argument("--store", help=store_help)
    buckets.add_argument("--tracking", action="store_true",
                         help=f"also the MLflow server's artifact bucket ({TRACKING_BUCKET})")

    ingest = sub.add_parser("ingest", help="put a dataset into the store (once)",
                            description="Download or copy a dataset into the store; "
                                        "re-running with the same content does nothing.")
    ingest.add_argument("--dataset", default="cifar10", choices=DATASETS,
                        help="dataset to ingest (default: cifar10; digits and synthetic "
                             "are generated locally and need none)")
    source = ingest.add_mutually_exclusive_group()
    source.add_argument("--source", help="URL or local path of the archive "
                                         "(default: the official CIFAR-10 URL)")
    source.add_argument("--source-env", metavar="VAR",
                        help="read the URL or path from environment variable VAR instead "
                             f"(the ingest Job's {DATASET_SOURCE_ENV}, from a Secret): a URL "
                             "with credentials stays off the command line")
    ingest.add_argument("--dataset-name", help=NAME_HELP)
    ingest.add_argument("--replace", action="store_true", default=None,
                        help="imagefolder: replace the images of --dataset-name even when "
                             "they came from another source (the stack's imagefolder always "
                             "takes its configured source)")
    ingest.add_argument("--store", help=store_help)
    ingest.add_argument("--image-size", type=int, default=32,
                        help="imagefolder: side the shards' images are decoded to, the "
                             "training config's image_size (default: 32)")
    ingest.add_argument("--shard-mib", type=int, default=128,
                        help="imagefolder: most MiB of pixels per shard (default: 128)")

    train = sub.add_parser(
        "train", help="train (resuming the run if it has checkpoints) and publish",
        description="Train on a dataset from the store, one checkpoint per epoch, then "
                    "publish a new model version. Flags override the --config file.")
    train.add_argument("--config", metavar="FILE",
                       help="JSON file of TrainConfig keys (dataset, model, epochs, batch_size, "
                            f"lr, seed, augment {'|'.join(AUGMENTATIONS)}, the recipe's "
                            "label_smoothing, schedule, warmup, crop_padding, test_flip "
                            "('auto': the model's), compile, ...)")
    train.add_argument("--store", help=store_help)
    train.add_argument("--dataset", choices=DATASETS)
    train.add_argument("--dataset-name", help=NAME_HELP)
    train.add_argument("--model", choices=MODELS)
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch-size", type=int, help="images per step per worker")
    train.add_argument("--lr", type=float, help="peak learning rate")
    train.add_argument("--seed", type=int)
    retrain_help = "set by `python -m trainer retrain` on the training job it creates"
    train.add_argument("--retrain-id", help=f"a retrain's id: a new run ({retrain_help})")
    train.add_argument("--retrain-reason", choices=REASONS, help=f"why ({retrain_help})")
    train.add_argument("--retrain-report", help=f"the drift report that triggered it "
                                                f"({retrain_help})")

    promote = sub.add_parser(
        "promote", help="serve a version on purpose: a candidate, or an older one (rollback)",
        description="Point the model's latest.json at a complete version, past the promotion "
                    "gate: the app serves it within a poll. A rollback is the promotion of an "
                    "older version. New publications are then judged against it.")
    promote.add_argument("--store", help=store_help)
    promote.add_argument("--model", required=True, metavar="NAME",
                         help="<model>-<dataset>, e.g. smallcnn-digits")
    promote.add_argument("--version", required=True, help="the version to serve, e.g. "
                                                          "20261123T152400Z-3f2a9c1b07")
    from trainer.retrain.cli import add_retrain_parser

    add_retrain_parser(sub, store_help)
    return parser


def read_json_file(path: str) -> dict[str, Any]:
    """The raw dict of a JSON config file (validated later, after flags are merged)."""
    try:
        with open(path, encoding="utf-8") as f:
            values = json.load(f)
    except OSError as e:
        raise ConfigError(f"config file {path}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"config file {path} is not valid JSON: {e}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a JSON object, "
                          f"got {type(values).__name__}")
    return values


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The --config file's keys, overridden by any flag given on the command line."""
    values = read_json_file(args.config) if args.config else {}
    for key in TRAIN_FLAGS:
        flag_value = getattr(args, key)
        if flag_value is not None:
            values[key] = flag_value
    return TrainConfig.from_dict(values)


def cmd_buckets(args: argparse.Namespace) -> None:
    store = open_store(args.store)
    buckets = ALL_BUCKETS if args.tracking else BUCKETS
    created = store.ensure_buckets(buckets)
    # An S3 store's own names (prefixed); a local store's directories are the logical names.
    prefix = getattr(store, "bucket_prefix", "")
    log.info("buckets %s ready in %s (created: %s)", ", ".join(prefix + b for b in buckets),
             store.url, ", ".join(created) or "none")


def ingest_source(args: argparse.Namespace) -> str | None:
    """--source, or the value of --source-env's variable, or None (the dataset's default).
    A variable that is unset or empty is an error, never the default: a Secret with an empty
    key must not turn into a download of something else."""
    if args.source_env is None:
        return args.source
    source = os.environ.get(args.source_env, "").strip()  # a Secret from a file ends in \n
    if not source:
        raise IngestError(f"--source-env {args.source_env}: the variable is unset or empty; "
                          "it must hold the dataset's URL or local path")
    return source


def cmd_ingest(args: argparse.Namespace) -> None:
    from trainer.data.ingest import ingest

    store = open_store(args.store)
    key = ingest(store, args.dataset, ingest_source(args), image_size=args.image_size,
                 shard_bytes=args.shard_mib * 1024**2, name=args.dataset_name,
                 replace=args.replace)
    if key:
        log.info("dataset %s is in the store at %s", args.dataset_name or args.dataset, key)


def cmd_train(args: argparse.Namespace) -> None:
    from trainer.run.train import run_training

    cfg = train_config_from_args(args)
    GateSettings.from_env()  # a bad gate setting stops the run now, not after training
    run_training(cfg, open_store(args.store))  # logs {"event": "done", ...} on rank 0


def cmd_promote(args: argparse.Namespace) -> None:
    from trainer.promote import promote

    promote(open_store(args.store), args.model, args.version)


def cmd_retrain(args: argparse.Namespace) -> None:
    from trainer.retrain.cli import run

    run(args)


COMMANDS = {"buckets": cmd_buckets, "ingest": cmd_ingest, "train": cmd_train,
            "promote": cmd_promote, "retrain": cmd_retrain}


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    COMMANDS[args.command](args)


__all__ = ["build_parser", "main", "train_config_from_args"]
