"""The promotion gate: is a newly trained version not worse than the one it would replace?

Decided at publication, after the version's files are built and before its meta.json is
written (the verdict is part of it), against the version ``latest.json`` names then:

- nothing served yet (or latest.json unreadable): promoted, there is nothing to beat;
- the same test split (same data fingerprint, seed and image size): the two meta.json
  accuracies, each measured by its run's evaluation on that split, are compared;
- another split (the dataset changed since the served version was trained): both exported
  programs are evaluated here, the same way, on the new run's test split, so two
  accuracies measured on different data are never compared;
- a served version that cannot be compared (other classes or input size, files gone or
  broken): promoted, with the reason (it could not be served either).

``finish_publication`` then moves latest.json only for a promoted verdict, and only while
latest.json still names the version the gate compared with (trainer.publish.publication).
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import Any

import torch

from trainer.contract.config import TrainConfig
from trainer.contract.errors import MetaError, ObjectNotFound
from trainer.contract.layout import MODEL_FILE, ModelKeys
from trainer.contract.lifecycle.promotion import (
    CANDIDATE,
    PROMOTED,
    GateSettings,
    Promotion,
    passes,
)
from trainer.contract.records import Latest
from trainer.contract.schema import VersionMeta
from trainer.data.augment import Normalizer
from trainer.store import Store

log = logging.getLogger(__name__)

EVAL_BATCH = 256
# train_config keys that choose which images are the test split, besides the data itself.
SPLIT_KEYS = ("dataset", "dataset_name", "data_prefix", "seed", "image_size", "synthetic_size")


@dataclass(frozen=True)
class Candidate:
    """The new version as the gate sees it: its program and the split it was tested on."""

    config: TrainConfig
    program: bytes
    """The exported model.pt2."""
    test_acc: float
    """Its run's accuracy on ``bundle``'s test split."""
    bundle: Any  # trainer.data.dataset.DatasetBundle

    @property
    def split(self) -> str:
        return self.bundle.fingerprint


def same_split(meta: VersionMeta, candidate: Candidate) -> bool:
    """Whether ``meta``'s accuracy was measured on the candidate's test split."""
    ours = candidate.config.to_dict()
    return (meta.data_fingerprint == candidate.split and bool(meta.data_fingerprint)
            and all(meta.train_config.get(k) == ours[k] for k in SPLIT_KEYS)
            and list(meta.input_size) == list(candidate.bundle.test.images.shape[1:]))


def pct(value: float) -> str:
    return f"{100 * value:.2f}%"


def program_accuracy(program: bytes, mean, std, images: torch.Tensor,
                     labels: torch.Tensor) -> float:
    """Accuracy of an exported program on uint8 ``images``, normalized as its meta.json
    says, in fp32 on the CPU: both versions measured by the same code."""
    module = torch.export.load(io.BytesIO(program)).module()
    normalize = Normalizer(mean, std)
    correct = 0
    with torch.inference_mode():
        for start in range(0, len(labels), EVAL_BATCH):
            logits = module(normalize(images[start:start + EVAL_BATCH]))
            correct += int((logits.argmax(1) == labels[start:start + EVAL_BATCH]).sum())
    return correct / len(labels)


def _served(store: Store, name: str, latest: Latest | None) -> VersionMeta | str:
    """The served version's meta.json, or why it cannot be read."""
    if latest is None:
        return ""
    try:
        return VersionMeta.from_json(store.get_bytes(ModelKeys(name).meta(latest.version)))
    except (ObjectNotFound, MetaError) as e:
        return f"the served version {latest.version} cannot be read ({e})"


def verdict(store: Store, name: str, latest: Latest | None, candidate: Candidate,
            settings: GateSettings, unreadable: bool = False) -> Promotion:
    """The gate's verdict on ``candidate`` against the version ``latest`` names
    (``unreadable``: latest.json exists but cannot be read, so it names nothing)."""
    tolerance = settings.tolerance
    served = _served(store, name, latest)
    if not isinstance(served, VersionMeta):
        reason = served or ("latest.json is unreadable: nothing to compare with" if unreadable
                            else f"the first version of {name}: nothing to beat")
        return Promotion(PROMOTED, reason, against=latest.version if latest else "",
                         candidate_acc=candidate.test_acc, split=candidate.split,
                         tolerance=tolerance)
    against = served.version
    if same_split(served, candidate):
        current_acc, candidate_acc, again = served.metrics.test_acc, candidate.test_acc, False
    else:
        problem = _incomparable(served, candidate)
        if problem is None:
            measured = _measure_both(store, name, served, candidate)
            problem = measured if isinstance(measured, str) else None
        if problem is not None:
            return Promotion(PROMOTED, f"{against} cannot be compared: {problem}",
                             against=against, candidate_acc=candidate.test_acc,
                             split=candidate.split, tolerance=tolerance)
        (current_acc, candidate_acc), again = measured, True
    ok = passes(candidate_acc, current_acc, tolerance)
    where = "evaluated again on the new test split" if again else "on the same test split"
    reason = (f"{pct(candidate_acc)} against {pct(current_acc)} of {against} ({where}): "
              + (f"within the tolerance of {tolerance:g} percentage points" if ok
                 else f"below it by more than the tolerance of {tolerance:g} percentage points"))
    return Promotion(PROMOTED if ok else CANDIDATE, reason, against=against,
                     candidate_acc=round(candidate_acc, 6), current_acc=round(current_acc, 6),
                     split=candidate.split, reevaluated=again, tolerance=tolerance)


def _incomparable(served: VersionMeta, candidate: Candidate) -> str | None:
    bundle = candidate.bundle
    if list(served.classes) != list(bundle.classes):
        return "its classes differ from the new data's"
    if list(served.input_size) != list(bundle.test.images.shape[1:]):
        return (f"its input size {served.input_size} differs from the new data's "
                f"{list(bundle.test.images.shape[1:])}")
    return None


def _measure_both(store: Store, name: str, served: VersionMeta,
                  candidate: Candidate) -> tuple[float, float] | str:
    """(served, candidate) accuracy on the candidate's test split, or why the served
    version's program cannot be evaluated."""
    test = candidate.bundle.test
    try:
        program = store.get_bytes(ModelKeys(name).version_file(served.version, MODEL_FILE))
        current = program_accuracy(program, served.mean, served.std, test.images, test.labels)
    except ObjectNotFound as e:
        return f"its {MODEL_FILE} is gone ({e})"
    except Exception as e:  # noqa: BLE001  a torch.export archive fails in many ways: broken
        log.warning("the served version %s does not run: %s: %s", served.version,
                    type(e).__name__, e)
        return f"its {MODEL_FILE} does not run ({type(e).__name__})"
    bundle = candidate.bundle
    mine = program_accuracy(candidate.program, bundle.mean, bundle.std, test.images,
                            test.labels)
    log.info("promotion gate: %s measured again on the new test split %s: %s (its own "
             "split: %s); the new version: %s", served.version, candidate.split, pct(current),
             pct(served.metrics.test_acc), pct(mine))
    return current, mine
