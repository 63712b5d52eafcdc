"""Publish a trained model as a new version; move ``latest.json`` only when it is complete.

Layout (trainer.layout; docs/architecture.md, "A published version"):
``models/<name>/versions/<version>/{model.pt2, metrics.json, curves.png,
confusion_matrix.png, examples/*.png, meta.json}``, ``metrics/<name>/<version>.json``,
then ``models/<name>/latest.json``.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import torch
from torch import nn

from trainer.checkpoint import TrainingState
from trainer.config import TrainConfig
from trainer.errors import ObjectNotFound
from trainer.layout import METRICS_FILE, MODEL_FILE, VERSION_TIME_FORMAT, ModelKeys
from trainer.schema import MetricsSummary, VersionMeta, VersionMetrics
from trainer.storage import Store

log = logging.getLogger(__name__)

EXAMPLES_PER_CLASS = 2
MAX_EXPORT_BATCH = 4096


@dataclass
class TrainingResult:
    """What a finished run hands to publication."""

    cfg: TrainConfig
    model: nn.Module
    bundle: object  # trainer.data.DatasetBundle
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


def new_version(store: Store, name: str) -> str:
    """A sortable UTC timestamp not used yet by this model."""
    keys = ModelKeys(name)
    while True:
        version = datetime.now(UTC).strftime(VERSION_TIME_FORMAT)
        if not store.list(keys.version(version)):
            return version
        time.sleep(1.0)


def created_at(version: str) -> str:
    """ISO 8601 UTC of a version's leading timestamp (``20261123T152400Z...``)."""
    stamp = datetime.strptime(version[:16], VERSION_TIME_FORMAT)
    return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")


def latest_version(store: Store, name: str) -> str | None:
    try:
        return json.loads(store.get_bytes(ModelKeys(name).latest))["version"]
    except ObjectNotFound:
        return None


def published_version_of(store: Store, name: str, run_id: str) -> str | None:
    """Run ``run_id``'s newest complete version: one whose meta.json (written after its
    files) exists, whether or not ``latest.json`` was moved before a crash."""
    keys = ModelKeys(name)
    metas = [k for k in store.list(keys.versions) if keys.version_of_meta_key(k)]
    for key in sorted(metas, reverse=True):
        if json.loads(store.get_bytes(key)).get("run_id") == run_id:
            return keys.version_of_meta_key(key)
    return None


def finish_publication(store: Store, name: str, version: str) -> None:
    """The steps after meta.json, safe to repeat: the metrics copy, then ``latest.json``,
    which never moves back to an older version than the one it names."""
    keys = ModelKeys(name)
    if not store.exists(keys.metrics_copy(version)):
        store.put_bytes(keys.metrics_copy(version),
                        store.get_bytes(keys.version_file(version, METRICS_FILE)))
    latest = latest_version(store, name)
    if latest is not None and latest >= version:
        return
    # Last: readers follow latest.json, and everything it points to now exists.
    store.put_bytes(keys.latest, json.dumps({"version": version}).encode())


def write_version(store: Store, meta: VersionMeta, files: dict[str, bytes]) -> None:
    """Upload ``files`` (relative paths, ``model.pt2`` and ``metrics.json`` among them),
    then ``meta.json``, whose presence means "complete", then finish the publication."""
    missing = [rel for rel in meta.downloads if rel not in files]
    if missing:
        raise ValueError(f"version {meta.version}: meta.json lists {missing}, not given")
    keys = ModelKeys(meta.name)
    for rel, data in files.items():
        store.put_bytes(keys.version_file(meta.version, rel), data)
    store.put_bytes(keys.meta(meta.version), meta.to_json())
    finish_publication(store, meta.name, meta.version)


def publish(store: Store, result: TrainingResult) -> str:
    from trainer import figures

    cfg, bundle, state, name = result.cfg, result.bundle, result.state, result.cfg.model_name
    version = new_version(store, name)
    input_shape = tuple(bundle.test.images.shape[1:])
    metrics = VersionMetrics(epochs=state.history, confusion_matrix=state.confusion,
                             classes=list(bundle.classes), world_size=state.world_size)
    files = {
        MODEL_FILE: export_program(result.model, input_shape),
        METRICS_FILE: metrics.to_json(),
        "curves.png": figures.curves_png(state.history, name),
        "confusion_matrix.png": figures.confusion_png(state.confusion, bundle.classes),
    }
    examples = {f"examples/{file_name}": png for file_name, png
                in figures.example_pngs(bundle.test, bundle.classes, EXAMPLES_PER_CLASS)}
    meta = VersionMeta(
        model=cfg.model, dataset=cfg.dataset, version=version, run_id=cfg.run_id,
        classes=list(bundle.classes), input_size=list(input_shape), mean=list(bundle.mean),
        std=list(bundle.std), train_config=cfg.to_dict(), metrics=MetricsSummary.of(state.history),
        created_at=created_at(version), files=list(files), examples=list(examples))
    write_version(store, meta, {**files, **examples})
    log.info(json.dumps({"event": "published", "model": name, "version": version,
                         "run_id": cfg.run_id, "prefix": ModelKeys(name).version(version)}))
    return version

