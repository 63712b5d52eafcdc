"""Publish a trained model as a new version; ``latest.json`` only ever moves forward, and
with the promotion gate on only to a version not worse than the one it replaces.

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
back. Conditional writes that lose a race read again and retry (trainer.publish.latest).

The promotion gate (trainer.publish.gate; ``TRAINSTACK_PROMOTION_GATE``, on by default)
judges the version before its meta.json is written, and the verdict is part of it: a
version refused is published as a candidate (complete, listed, never moved to), one
promoted moves latest.json only while it still names the version it was compared with.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import torch
from torch import nn

from trainer.contract.config import RunIdentity
from trainer.contract.errors import MetaError, PreconditionFailed, StoreError
from trainer.contract.layout import (
    METRICS_FILE,
    MODEL_FILE,
    REFERENCE_FILE,
    VERSION_TIME_FORMAT,
    ModelKeys,
    version_name,
)
from trainer.contract.lifecycle.promotion import BY_GATE, GateSettings, describe
from trainer.contract.records import Latest, VersionClaim
from trainer.contract.schema import MetricsSummary, VersionMeta, VersionMetrics
from trainer.limits.footprint import evaluation_batch_size
from trainer.models.zoo import served_model
from trainer.publish import gate
from trainer.publish.latest import (
    allocate_sequence,
    holds,
    log_move,
    move_latest,
    read_latest,
)
from trainer.state.checkpoint import TrainingState
from trainer.store import Store

log = logging.getLogger(__name__)

EXAMPLES_PER_CLASS = 2
MAX_EXPORT_BATCH = 4096
# Seconds tried for a free version name: only many publications of one run at once would
# exhaust them.
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
            if holds(store, keys.claim(version), claim):
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
    moved only forward and only as the version's promotion verdict allows. Logs (and
    returns) whether latest.json moved."""
    keys = ModelKeys(name)
    meta = VersionMeta.from_json(store.get_bytes(keys.meta(version)))
    if not store.exists(keys.metrics_copy(version)):
        store.put_bytes(keys.metrics_copy(version),
                        store.get_bytes(keys.version_file(version, METRICS_FILE)))
    # A meta.json without a sequence (written by hand or before sequences existed) counts
    # as completed now.
    sequence = meta.sequence or allocate_sequence(store, name)
    promotion = meta.promotion
    if promotion is not None and not promotion.promoted:
        before, _ = read_latest(store, name)
        log_move(name, version, sequence, False, before, promotion=describe(promotion))
        return False
    if promotion is None:  # the gate off, or a version published before it existed
        moved, before = move_latest(store, name, Latest(version, sequence))
        log_move(name, version, sequence, moved, before)
        return moved
    moved, before = move_latest(store, name, Latest(version, sequence, promoted_by=BY_GATE),
                                over=promotion.against)
    why = {}
    if not moved and before is not None and before.version not in (version, promotion.against):
        # Two publications at once: this one was not compared with what is served now.
        why["superseded"] = (f"latest.json names {before.version} now, not the version the "
                             "gate compared with: promote this one by hand to serve it")
    log_move(name, version, sequence, moved, before, promotion=describe(promotion), **why)
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


def judged(store: Store, name: str, candidate: gate.Candidate):
    """The promotion gate's verdict on ``candidate`` (None with the gate off)."""
    settings = GateSettings.from_env()
    if not settings.enabled:
        return None
    latest, tag = read_latest(store, name)
    promotion = gate.verdict(store, name, latest, candidate, settings,
                             unreadable=latest is None and tag is not None)
    log.info(json.dumps({"event": "promotion", "model": name, **promotion.to_dict()}))
    return promotion


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
                                state.history[-1].test_acc, seed=cfg.seed,
                                batch_size=evaluation_batch_size(cfg.batch_size))
    files = {
        MODEL_FILE: export_program(served, input_shape),
        METRICS_FILE: metrics.to_json(),
        REFERENCE_FILE: reference.to_json(),
        "curves.png": figures.curves_png(state.history, name),
        "confusion_matrix.png": figures.confusion_png(state.confusion, bundle.classes),
    }
    examples = {f"examples/{file_name}": png for file_name, png
                in figures.example_pngs(bundle.test, bundle.classes, EXAMPLES_PER_CLASS)}
    promotion = judged(store, name, gate.Candidate(cfg, files[MODEL_FILE],
                                                   state.history[-1].test_acc, bundle))
    meta = VersionMeta(
        model=cfg.model, dataset=cfg.resolved_dataset_name, version=version, run_id=identity.run_id,
        classes=list(bundle.classes), input_size=list(input_shape), mean=list(bundle.mean),
        std=list(bundle.std), train_config=cfg.to_dict(), metrics=MetricsSummary.of(state.history),
        created_at=created_at(version), files=list(files), examples=list(examples),
        data_fingerprint=identity.data_fingerprint, model_revision=identity.model_revision,
        reference=REFERENCE_FILE, promotion=promotion, retrain=cfg.retrain)
    moved = write_version(store, meta, {**files, **examples})
    log.info(json.dumps({"event": "published", "model": name, "version": version,
                         "run_id": identity.run_id, "latest_moved": moved,
                         "prefix": ModelKeys(name).version(version)}))
    return version
