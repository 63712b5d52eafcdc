"""The object store's key layout: the one place that spells a key.

The trainer writes with these functions, the app reads with them, tests and benchmarks
build fixtures with them. A key's first segment is a *logical* bucket (``datasets``,
``models``, ``metrics``); an S3 store may map it to a prefixed bucket name, a local
store keeps it as a directory. Stdlib only.

```
datasets/<dataset>/...                                   ingested data
datasets/<dataset>/.source, .manifest.sha256              an image folder's origin, then its file list
models/<name>/runs/<run_id>/checkpoints/epoch-0007.pt    full training state
models/<name>/runs/<run_id>/checkpoints/epoch-0007+0000012800.pt   ... mid-epoch (12800 of epoch 8 done)
models/<name>/leases/<run_id>.json                      which job trains the run (conditional writes)
models/<name>/versions/<version>/claim.json             created exclusively, first
models/<name>/versions/<version>/{model.pt2, meta.json, metrics.json, *.png, examples/}
models/<name>/progress/<run_id>.json                     a run's progress, rewritten each epoch
models/<name>/sequence.json                              last publication sequence handed out
models/<name>/latest.json                                {"version": ..., "sequence": ...}, moved last
models/<name>/retrains/<retrain_id>.json                 one retrain: why, how far, how it ended
models/<name>/retrain-slot.json                          which retrain may train the model now
metrics/<name>/<version>.json                            copy of metrics.json
metrics/<name>/monitoring/windows/<version>/<window>.json   what the app saw (never images)
metrics/<name>/monitoring/reports/<version>/<check>.json    each drift check's report
```
``<name>`` is :func:`model_name` (``<model>-<dataset>``); ``<version>`` is
:func:`version_name` (``<UTC %Y%m%dT%H%M%SZ>-<run_id>``). ``<dataset>`` is the dataset's
name: its kind (``cifar10``, ``digits``, ``imagefolder``: the stack's one image folder), or
``imagefolder-<label>`` for each image folder of its own (trainer.contract.datasets;
`make demo` names one after its folder). Stores written before named image folders hold
``imagefolder`` only, and read as they are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

BUCKETS = ("datasets", "models", "metrics")
# The MLflow server's artifacts (the stack's `mlflow`); only the server writes there.
TRACKING_BUCKET = "mlflow"
ALL_BUCKETS = (*BUCKETS, TRACKING_BUCKET)
# An S3 store names its buckets ``<prefix><bucket>`` (bucket names are global on AWS); keys
# in code stay logical (``models/...``). A local store ignores the prefix.
BUCKET_PREFIX_ENV = "TRAINSTACK_BUCKET_PREFIX"
# The web app's settings the stack passes (infra/ writes them, inference/ reads them).
# The access token (optional), by secretKeyRef only; also the key of its Secret.
AUTH_TOKEN_ENV = "TRAINSTACK_AUTH_TOKEN"
# A bearer token is guessed only by brute force: 32 characters of `openssl rand -hex 16`
# carry 128 bits. Visible ASCII only: it travels in an HTTP Authorization header.
AUTH_TOKEN_MIN = 32
AUTH_TOKEN_ALLOWED = (f"at least {AUTH_TOKEN_MIN} visible ASCII characters, no spaces "
                      "(e.g. openssl rand -hex 16)")


def auth_token_problem(token: str) -> str | None:
    """What makes ``token`` unfit as the app's access token (None: fine); the one rule of
    the stack's config and the app. Never quotes the token (it may be a near miss)."""
    bad = [c for c in token if not "!" <= c <= "~"]
    if bad:
        kinds = sorted({"whitespace" if c.isspace() else "non-ASCII or control" for c in bad})
        return f"contains {' and '.join(kinds)} characters (a trailing newline from a file?)"
    if len(token) < AUTH_TOKEN_MIN:
        return f"is shorter than {AUTH_TOKEN_MIN} characters"
    return None
# Where users' browsers open MLflow (the links to each version's run); the trainer's
# MLFLOW_TRACKING_URI is an in-cluster name a browser cannot reach.
MLFLOW_UI_URL_ENV = "TRAINSTACK_MLFLOW_UI_URL"
BUCKET_NAME_RULES = (
    "3-63 characters of a-z, 0-9, '.' and '-', starting and ending with a letter or digit, "
    "without '..', '.-' or '-.', not an IP address, not starting with 'xn--', 'sthree-' or "
    "'amzn-s3-demo-', not ending with '-s3alias', '--ol-s3', '.mrap', '--x-s3' or '--table-s3'"
)

# Datasets
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
# Written last by `trainer ingest --dataset imagefolder`: "<sha256>  <path under prefix>".
MANIFEST_NAME = ".manifest.sha256"
# Written before the manifest: where an image folder's files came from, without credentials.
SOURCE_NAME = ".source"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")

# Published versions
META_FILE = "meta.json"
METRICS_FILE = "metrics.json"
MODEL_FILE = "model.pt2"
# What monitoring compares the served predictions with (trainer.contract.lifecycle.monitoring.Reference).
REFERENCE_FILE = "reference.json"
LATEST_FILE = "latest.json"
CLAIM_FILE = "claim.json"
SEQUENCE_FILE = "sequence.json"
RETRAIN_SLOT_FILE = "retrain-slot.json"
RETRAIN_SUFFIX = ".json"
LEASE_SUFFIX = ".json"
# Runs: models/<name>/progress/<run_id>.json
PROGRESS_SUFFIX = ".json"
VERSION_TIME_FORMAT = "%Y%m%dT%H%M%SZ"

_CHECKPOINT = re.compile(r"/epoch-(\d{4,})\.pt$")
_MID_EPOCH_CHECKPOINT = re.compile(r"/epoch-(\d{4,})\+(\d{10,})\.pt$")
_BUCKET_CHARS = re.compile(r"^[a-z0-9.-]+$")
_IPV4 = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")
_RESERVED_STARTS = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_ENDS = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")


def bucket_name_problem(name: str) -> str | None:
    """Why ``name`` is no valid S3 bucket name, or None.

    AWS's rules for general purpose buckets, plus the ban on '.-' and '-.' that MinIO and
    the minio client keep from the older rules, so a name valid here works on both.
    """
    if not 3 <= len(name) <= 63:
        return f"{len(name)} characters"
    if not _BUCKET_CHARS.fullmatch(name):
        return "a character other than a-z, 0-9, '.' and '-'"
    if not (name[0] + name[-1]).isalnum():
        return "does not start and end with a letter or digit"
    for pair in ("..", ".-", "-."):
        if pair in name:
            return f"contains {pair!r}"
    if _IPV4.fullmatch(name):
        return "formatted as an IP address"
    if name.startswith(_RESERVED_STARTS) or name.endswith(_RESERVED_ENDS):
        return "a prefix or suffix S3 reserves"
    return None


def bucket_names(prefix: str = "", buckets: tuple[str, ...] = BUCKETS) -> dict[str, str]:
    """Each logical bucket -> its name in an S3 store (``<prefix><bucket>``).

    ValueError naming the first name that breaks the S3 rules (BUCKET_NAME_RULES).
    """
    names = {bucket: f"{prefix}{bucket}" for bucket in buckets}
    for name in names.values():
        problem = bucket_name_problem(name)
        if problem:
            raise ValueError(f"bucket name {name!r} is not a valid S3 bucket name ({problem}); "
                             f"allowed: {BUCKET_NAME_RULES}")
    return names


def model_name(model: str, dataset: str) -> str:
    """``<model>-<dataset>``: the folder of a model's runs and versions, and what the app serves."""
    return f"{model}-{dataset}"


def version_name(timestamp: str, run_id: str) -> str:
    """``<UTC %Y%m%dT%H%M%SZ>-<run_id>``: sorts by time, unique per run."""
    return f"{timestamp}-{run_id}"


def dataset_prefix(dataset: str, prefix: str | None = None) -> str:
    """Where a dataset lives: ``prefix`` if given, else ``datasets/<dataset>`` (no slash)."""
    return (prefix or f"datasets/{dataset}").rstrip("/")


def cifar10_key(prefix: str | None = None) -> str:
    return f"{dataset_prefix('cifar10', prefix)}/{CIFAR10_ARCHIVE}"


def manifest_key(prefix: str) -> str:
    return f"{prefix.rstrip('/')}/{MANIFEST_NAME}"


def source_key(prefix: str) -> str:
    return f"{prefix.rstrip('/')}/{SOURCE_NAME}"


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def split_key(key: str) -> tuple[str, str]:
    """``(bucket, path)`` of ``<bucket>/<path>``; ValueError if either part is empty."""
    bucket, _, name = key.strip("/").partition("/")
    if not bucket or not name:
        raise ValueError(f"store key {key!r} must look like '<bucket>/<path>'")
    return bucket, name


def is_safe_relative(path: str) -> bool:
    """A file path inside a version folder: relative, no '..', no empty parts."""
    parts = PurePosixPath(path).parts
    return bool(parts) and not path.startswith("/") and ".." not in parts and "\\" not in path


@dataclass(frozen=True)
class ModelKeys:
    """Every key of one ``<model>-<dataset>`` name."""

    name: str

    @property
    def root(self) -> str:
        return f"models/{self.name}/"

    @property
    def latest(self) -> str:
        return f"models/{self.name}/{LATEST_FILE}"

    @property
    def versions(self) -> str:
        return f"models/{self.name}/versions/"

    @property
    def sequence(self) -> str:
        return f"models/{self.name}/{SEQUENCE_FILE}"

    def run(self, run_id: str) -> str:
        return f"models/{self.name}/runs/{run_id}/"

    @property
    def retrains(self) -> str:
        """Every retrain's record (trainer.contract.lifecycle.retrain.RetrainRecord)."""
        return f"models/{self.name}/retrains/"

    def retrain(self, retrain_id: str) -> str:
        return f"{self.retrains}{retrain_id}{RETRAIN_SUFFIX}"

    def retrain_of_key(self, key: str) -> str | None:
        """``<retrain_id>`` of ``models/<name>/retrains/<retrain_id>.json``, else None."""
        if not key.startswith(self.retrains) or not key.endswith(RETRAIN_SUFFIX):
            return None
        retrain_id = key[len(self.retrains):-len(RETRAIN_SUFFIX)]
        return retrain_id if retrain_id and "/" not in retrain_id else None

    @property
    def retrain_slot(self) -> str:
        """Which retrain may train the model now (trainer.contract.lifecycle.retrain.RetrainSlot)."""
        return f"models/{self.name}/{RETRAIN_SLOT_FILE}"

    @property
    def progresses(self) -> str:
        """Every run's progress record; they outlive the runs' checkpoints."""
        return f"models/{self.name}/progress/"

    def progress(self, run_id: str) -> str:
        """The run's progress record (trainer.contract.reporting.progress.RunProgress), rewritten by rank 0."""
        return f"{self.progresses}{run_id}{PROGRESS_SUFFIX}"

    def run_of_progress_key(self, key: str) -> str | None:
        """``<run_id>`` of ``models/<name>/progress/<run_id>.json``, else None."""
        if not key.startswith(self.progresses) or not key.endswith(PROGRESS_SUFFIX):
            return None
        run_id = key[len(self.progresses):-len(PROGRESS_SUFFIX)]
        return run_id if run_id and "/" not in run_id else None

    def lease(self, run_id: str) -> str:
        """The run's lease (trainer.contract.records.RunLeaseRecord): one job trains a run at a time.
        Outside ``runs/<run_id>/``, which a published run leaves empty."""
        return f"models/{self.name}/leases/{run_id}{LEASE_SUFFIX}"

    def checkpoints(self, run_id: str) -> str:
        return f"{self.run(run_id)}checkpoints/"

    def checkpoint(self, run_id: str, epoch: int) -> str:
        return f"{self.checkpoints(run_id)}epoch-{epoch:04d}.pt"

    def mid_epoch_checkpoint(self, run_id: str, epochs_done: int, trained: int) -> str:
        """The state after ``epochs_done`` epochs and ``trained`` samples of the next one."""
        return f"{self.checkpoints(run_id)}epoch-{epochs_done:04d}+{trained:010d}.pt"

    def version(self, version: str) -> str:
        return f"{self.versions}{version}/"

    def version_file(self, version: str, rel: str) -> str:
        if not is_safe_relative(rel):
            raise ValueError(f"{rel!r} is not a safe path inside a version folder")
        return f"{self.version(version)}{rel}"

    def meta(self, version: str) -> str:
        return self.version_file(version, META_FILE)

    def claim(self, version: str) -> str:
        return self.version_file(version, CLAIM_FILE)

    def metrics_copy(self, version: str) -> str:
        return f"metrics/{self.name}/{version}.json"

    @property
    def monitoring(self) -> str:
        return f"metrics/{self.name}/monitoring/"

    def windows(self, version: str) -> str:
        """Windows of predictions of ``version`` (trainer.contract.lifecycle.monitoring.PredictionWindow);
        window names sort by time."""
        return f"{self.monitoring}windows/{version}/"

    def window(self, version: str, window_id: str) -> str:
        return f"{self.windows(version)}{window_id}.json"

    def reports(self, version: str) -> str:
        """Drift reports of ``version`` (trainer.contract.lifecycle.monitoring.DriftReport)."""
        return f"{self.monitoring}reports/{version}/"

    def report(self, version: str, report_id: str) -> str:
        return f"{self.reports(version)}{report_id}.json"

    def version_of_meta_key(self, key: str) -> str | None:
        """``<version>`` of ``models/<name>/versions/<version>/meta.json``, else None."""
        if not key.startswith(self.versions) or not key.endswith("/" + META_FILE):
            return None
        version = key[len(self.versions):-len(META_FILE) - 1]
        return version if version and "/" not in version else None


def checkpoint_epoch(key: str) -> int | None:
    """The epoch of a checkpoint key (``.../epoch-0007.pt`` -> 7), else None."""
    match = _CHECKPOINT.search(key)
    return int(match.group(1)) if match else None


def checkpoint_position(key: str) -> tuple[int, int] | None:
    """``(epochs done, samples of the next epoch trained)`` of any checkpoint key
    (``.../epoch-0007.pt`` -> (7, 0), ``.../epoch-0007+0000012800.pt`` -> (7, 12800))."""
    epoch = checkpoint_epoch(key)
    if epoch is not None:
        return epoch, 0
    match = _MID_EPOCH_CHECKPOINT.search(key)
    return (int(match.group(1)), int(match.group(2))) if match else None


def name_of_latest_key(key: str) -> str | None:
    """``<name>`` of ``models/<name>/latest.json``, else None (for discovering models)."""
    parts = key.split("/")
    if len(parts) == 3 and parts[0] == "models" and parts[2] == LATEST_FILE and parts[1]:
        return parts[1]
    return None


def name_of_progress_key(key: str) -> str | None:
    """``<name>`` of ``models/<name>/progress/<run_id>.json``, else None (for discovering
    runs before anything of theirs is published)."""
    parts = key.split("/")
    if (len(parts) == 4 and parts[0] == "models" and parts[1]
            and ModelKeys(parts[1]).run_of_progress_key(key) is not None):
        return parts[1]
    return None
