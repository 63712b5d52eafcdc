"""Publish a trained model as a new version; ``latest.json`` only ever moves forward.

Layout (trainer.contract.layout; docs/architecture.md, "A published version"):
``models/<name>/versions/<version>/claim.json`` first, by exclusive create (the folder is
this run's alone), then ``{model.pt2, metrics.json, curves.png, confusion_matrix.png,
examples/*.png}``, then ``meta.json`` (whose presence means "complete"),
``metrics/<name>/<version>.json``, and last ``models/<name>/latest.json``.

Order without clocks: once a version's files are uploaded it takes the next publication
``sequence`` of its model name from ``models/<name>/sequence.json`` (a conditional write),
and latest.json moves to it (another conditional write) only if its sequence is higher
than the one latest.json names. Versions are ordered by when their publication completed,
whatever each pod's clock says, and a delayed or repeated write never moves latest.json
back. Conditional writes that lose a race read again and retry.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import logging
import random
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import torch
from torch import nn

from trainer.contract.config import RunIdentity
from trainer.contract.errors import MetaError, ObjectNotFound, PreconditionFailed, StoreError
from trainer.contract.layout import (
    METRICS_FILE,
    MODEL_FILE,
    REFERENCE_FILE,
    VERSION_TIME_FORMAT,
    ModelKeys,
    version_name,
)
from trainer.contract.records import Latest, SequenceCounter, VersionClaim
from trainer.contract.schema import MetricsSummary, VersionMeta, VersionMetrics
from trainer.models.zoo import served_model
from trainer.state.checkpoint import TrainingState
from trainer.store import Store

log = logging.getLogger(__name__)

EXAMPLES_PER_CLASS = 2
MAX_EXPORT_BATCH = 4096
# Conditional writes retried after losing a race (with jittered backoff), and seconds tried
# for a free version name: only many publications of one name at once would exhaust them.
WRITE_ATTEMPTS = 50
CLAIM_ATTEMPTS = 30


@dataclass
class TrainingResult:
    """What a finished run hands to publication."""

    identity: RunIdentity
    model: nn.Module
    bundle: object  # trainer.data.loading.DatasetBundle
    state: TrainingState


def export_program(model: nn.Module, input_shape: tuple[int, ...]) -> bytes:
    """``torch.export`` of an fp32 eval-mode CPU copy, with a dynamic batch dimension."""
    model = copy.deepcopy(model).float().cpu().eval()
    model = model.to(memory_format=torch.contiguous_format)
    example = torch.zeros(2, *input_shape)
    batch = torch.export.Dim("batch", min=1, max=MAX_EXPORT_BATCH)
    program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


def _backoff(attempt: int) -> None:
    time.sleep(min(1.0, 0.01 * 2 ** attempt) * (0.5 + random.random()))


def _holds(store: Store, key: str, data: bytes) -> bool:
    """Whether ``key`` holds ``data``: our own write, when a retried request whose first
    attempt did succeed comes back as "precondition failed"."""
    try:
        return store.get_bytes(key) == data
    except ObjectNotFound:
        return False


def claim_version(store: Store, name: str, run_id: str) -> str:
    """A new version name ``<UTC timestamp>-<run_id>``, claimed by an exclusive create of its
    claim.json before anything is written into the folder."""
    keys = ModelKeys(name)
    claim = VersionClaim(run_id=run_id, writer=uuid.uuid4().hex).to_json()
    for _ in range(CLAIM_ATTEMPTS):
        version = version_name(datetime.now(UTC).strftime(VERSION_TIME_FORMAT), run_id)
        try:
            store.put_if_absent(keys.claim(version), claim)
            return version
        except PreconditionFailed:
            if _holds(store, keys.claim(version), claim):
                return version
        time.sleep(1.0)  # another publication of this run took this second: the next one
    raise StoreError(f"no free version name for run {run_id} of {name} in {CLAIM_ATTEMPTS} s")


def _ensure_claim(store: Store, keys: ModelKeys, version: str, run_id: str) -> None:
    """Claim ``version`` for ``run_id`` unless this run holds it; StoreError if another does."""
    claim = VersionClaim(run_id=run_id, writer=uuid.uuid4().hex).to_json()
    try:
        store.put_if_absent(keys.claim(version), claim)
    except PreconditionFailed:
        try:
            holder = VersionClaim.from_json(store.get_bytes(keys.claim(version))).run_id
        except MetaError as e:
            raise StoreError(f"version {version} of {keys.name}: unreadable claim ({e})") from None
        if holder != run_id:
            raise StoreError(f"version {version} of {keys.name} is claimed by run {holder}, "
                             f"not {run_id}") from None


def created_at(version: str) -> str:
    """ISO 8601 UTC of a version's leading timestamp (``20261123T152400Z...``)."""
    stamp = datetime.strptime(version[:16], VERSION_TIME_FORMAT)
    return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")


def _read_latest(store: Store, name: str) -> tuple[Latest | None, str | None]:
    """latest.json and its tag; (None, None) if absent, (None, tag) if unreadable."""
    try:
        data, tag = store.get_tagged(ModelKeys(name).latest)
    except ObjectNotFound:
        return None, None
    try:
        return Latest.from_json(data), tag
    except MetaError as e:
        log.warning("models/%s/latest.json is unreadable (%s): the next version replaces it",
                    name, e)
        return None, tag


def latest_version(store: Store, name: str) -> str | None:
    latest, _ = _read_latest(store, name)
    return latest.version if latest else None


def allocate_sequence(store: Store, name: str) -> int:
    """The next publication sequence of ``name``: higher than any handed out before and than
    latest.json's (a lost or reset counter cannot hand out a number twice)."""
    key = ModelKeys(name).sequence
    for attempt in range(WRITE_ATTEMPTS):
        try:
            data, tag = store.get_tagged(key)
        except ObjectNotFound:
            data, tag = None, None
        try:
            last = SequenceCounter.from_json(data).last if data is not None else 0
        except MetaError:
            last = 0
        latest, _ = _read_latest(store, name)
        number = max(last, latest.sequence if latest else 0) + 1
        mine = SequenceCounter(last=number, writer=uuid.uuid4().hex).to_json()
        try:
            if tag is None:
                store.put_if_absent(key, mine)
            else:
                store.put_if_match(key, mine, tag)
            return number
        except PreconditionFailed:
            if _holds(store, key, mine):
                return number
        _backoff(attempt)
    raise StoreError(f"{key}: no sequence number after {WRITE_ATTEMPTS} attempts "
                     "(too many publications at once)")


def move_latest(store: Store, name: str, version: str, sequence: int) -> tuple[bool, Latest | None]:
    """Point latest.json at ``version`` unless it names one of the same or a higher sequence.
    Returns (whether it moved, what it named before)."""
    key = ModelKeys(name).latest
    mine = Latest(version=version, sequence=sequence).to_json()
    for attempt in range(WRITE_ATTEMPTS):
        current, tag = _read_latest(store, name)
        if current is not None and (current.version == version or current.sequence >= sequence):
            return False, current
        try:
            if tag is None:
                store.put_if_absent(key, mine)
            else:
                store.put_if_match(key, mine, tag)
            return True, current
        except PreconditionFailed:
            if _holds(store, key, mine):
                return True, current
        _backoff(attempt)
    raise StoreError(f"{key}: not moved after {WRITE_ATTEMPTS} attempts "
                     "(too many publications at once)")


def published_version_of(store: Store, name: str, run_id: str) -> str | None:
    """Run ``run_id``'s newest complete version: one named for it whose meta.json (written
    after its files) exists, whether or not ``latest.json`` was moved before a crash."""
    keys = ModelKeys(name)
    versions = [v for k in store.list(keys.versions)
                if (v := keys.version_of_meta_key(k)) and v.endswith(f"-{run_id}")]
    for version in sorted(versions, reverse=True):
        if json.loads(store.get_bytes(keys.meta(version))).get("run_id") == run_id:
            return version
    return None


def finish_publication(store: Store, name: str, version: str) -> bool:
    """The steps after meta.json, safe to repeat: the metrics copy, then ``latest.json``,
    moved only forward. Logs (and returns) whether latest.json moved."""
    keys = ModelKeys(name)
    meta = VersionMeta.from_json(store.get_bytes(keys.meta(version)))
    if not store.exists(keys.metrics_copy(version)):
        store.put_bytes(keys.metrics_copy(version),
                        store.get_bytes(keys.version_file(version, METRICS_FILE)))
    # A meta.json without a sequence (written by hand or before sequences existed) counts
    # as completed now.
    sequence = meta.sequence or allocate_sequence(store, name)
    moved, before = move_latest(store, name, version, sequence)
    log.info(json.dumps({"event": "latest", "model": name, "version": version,
                         "sequence": sequence, "moved": moved,
                         "latest": version if moved else before.version,
                         "latest_sequence": sequence if moved else before.sequence}))
    return moved


def write_version(store: Store, meta: VersionMeta, files: dict[str, bytes]) -> bool:
    """Upload ``files`` (relative paths, ``model.pt2`` and ``metrics.json`` among them) into
    the version folder claimed for ``meta.run_id``, then ``meta.json`` with the next
    sequence, whose presence means "complete", then finish the publication. Returns whether
    latest.json moved to it."""
    missing = [rel for rel in meta.downloads if rel not in files]
    if missing:
        raise ValueError(f"version {meta.version}: meta.json lists {missing}, not given")
    keys = ModelKeys(meta.name)
    _ensure_claim(store, keys, meta.version, meta.run_id)
    for rel, data in files.items():
        store.put_bytes(keys.version_file(meta.version, rel), data)
    meta = dataclasses.replace(meta, sequence=allocate_sequence(store, meta.name))
    store.put_bytes(keys.meta(meta.version), meta.to_json())
    return finish_publication(store, meta.name, meta.version)


def publish(store: Store, result: TrainingResult) -> str:
    from trainer.publish import figures
    from trainer.publish.reference import build_reference

    identity, bundle, state = result.identity, result.bundle, result.state
    cfg, name = identity.config, identity.config.model_name
    version = claim_version(store, name, identity.run_id)
    input_shape = tuple(bundle.test.images.shape[1:])
    metrics = VersionMetrics(epochs=state.history, confusion_matrix=state.confusion,
                             classes=list(bundle.classes), world_size=state.world_size)
    served = served_model(result.model, cfg.recipe.test_flip)
    reference = build_reference(served, bundle.test.images, bundle.test.labels,
                                list(bundle.classes), bundle.mean, bundle.std,
                                state.history[-1].test_acc, seed=cfg.seed)
    files = {
        MODEL_FILE: export_program(served, input_shape),
        METRICS_FILE: metrics.to_json(),
        REFERENCE_FILE: reference.to_json(),
        "curves.png": figures.curves_png(state.history, name),
        "confusion_matrix.png": figures.confusion_png(state.confusion, bundle.classes),
    }
    examples = {f"examples/{file_name}": png for file_name, png
                in figures.example_pngs(bundle.test, bundle.classes, EXAMPLES_PER_CLASS)}
    meta = VersionMeta(
        model=cfg.model, dataset=cfg.resolved_dataset_name, version=version, run_id=identity.run_id,
        classes=list(bundle.classes), input_size=list(input_shape), mean=list(bundle.mean),
        std=list(bundle.std), train_config=cfg.to_dict(), metrics=MetricsSummary.of(state.history),
        created_at=created_at(version), files=list(files), examples=list(examples),
        data_fingerprint=identity.data_fingerprint, model_revision=identity.model_revision,
        reference=REFERENCE_FILE)
    moved = write_version(store, meta, {**files, **examples})
    log.info(json.dumps({"event": "published", "model": name, "version": version,
                         "run_id": identity.run_id, "latest_moved": moved,
                         "prefix": ModelKeys(name).version(version)}))
    return version
