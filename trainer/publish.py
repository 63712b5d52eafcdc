"""Publish a trained model as a new version; move ``latest.json`` only when it is complete.

Layout (see docs/architecture.md, "A published version"):
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

from trainer.config import TrainConfig
from trainer.storage import ObjectNotFound, Store

log = logging.getLogger(__name__)

VERSION_FORMAT = "%Y%m%dT%H%M%SZ"
EXAMPLES_PER_CLASS = 2
MAX_EXPORT_BATCH = 4096


@dataclass
class TrainingResult:
    """What a finished run hands to publication."""

    cfg: TrainConfig
    model: nn.Module
    bundle: object  # trainer.data.DatasetBundle
    history: list[dict]
    confusion: list[list[int]]
    world_size: int


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
    while True:
        version = datetime.now(UTC).strftime(VERSION_FORMAT)
        if not store.list(f"models/{name}/versions/{version}/"):
            return version
        time.sleep(1.0)


def latest_version(store: Store, name: str) -> str | None:
    try:
        return json.loads(store.get_bytes(f"models/{name}/latest.json"))["version"]
    except ObjectNotFound:
        return None


def published_version_of(store: Store, name: str, run_id: str) -> str | None:
    """Run ``run_id``'s newest complete version: one whose meta.json (written after its
    files) exists, whether or not ``latest.json`` was moved before a crash."""
    metas = [k for k in store.list(f"models/{name}/versions/") if k.endswith("/meta.json")]
    for key in sorted(metas, reverse=True):
        if json.loads(store.get_bytes(key)).get("run_id") == run_id:
            return key.split("/")[-2]
    return None


def finish_publication(store: Store, name: str, version: str) -> None:
    """The steps after meta.json, safe to repeat: the metrics copy, then ``latest.json``,
    which never moves back to an older version than the one it names."""
    metrics_key = f"metrics/{name}/{version}.json"
    if not store.exists(metrics_key):
        store.put_bytes(metrics_key,
                        store.get_bytes(f"models/{name}/versions/{version}/metrics.json"))
    latest = latest_version(store, name)
    if latest is not None and latest >= version:
        return
    # Last: readers follow latest.json, and everything it points to now exists.
    store.put_bytes(f"models/{name}/latest.json", json.dumps({"version": version}).encode())


def publish(store: Store, result: TrainingResult) -> str:
    from trainer import figures

    cfg, bundle, name = result.cfg, result.bundle, result.cfg.model_name
    version = new_version(store, name)
    prefix = f"models/{name}/versions/{version}/"
    input_shape = tuple(bundle.test.images.shape[1:])
    metrics = {"epochs": result.history, "confusion_matrix": result.confusion,
               "classes": list(bundle.classes), "world_size": result.world_size}
    metrics_json = json.dumps(metrics, indent=1).encode()

    store.put_bytes(prefix + "model.pt2", export_program(result.model, input_shape))
    store.put_bytes(prefix + "metrics.json", metrics_json)
    store.put_bytes(prefix + "curves.png", figures.curves_png(result.history, name))
    store.put_bytes(prefix + "confusion_matrix.png",
                    figures.confusion_png(result.confusion, bundle.classes))
    examples = []
    for file_name, png in figures.example_pngs(bundle.test, bundle.classes, EXAMPLES_PER_CLASS):
        store.put_bytes(prefix + f"examples/{file_name}", png)
        examples.append(f"examples/{file_name}")
    meta = build_meta(result, version, input_shape, examples)
    store.put_bytes(prefix + "meta.json", json.dumps(meta, indent=1).encode())
    store.put_bytes(f"metrics/{name}/{version}.json", metrics_json)
    finish_publication(store, name, version)
    log.info(json.dumps({"event": "published", "model": name, "version": version,
                         "run_id": cfg.run_id, "prefix": prefix}))
    return version


def build_meta(result: TrainingResult, version: str, input_shape, examples) -> dict:
    cfg, bundle, last = result.cfg, result.bundle, result.history[-1]
    return {
        "model": cfg.model, "dataset": cfg.dataset, "version": version,
        "run_id": cfg.run_id, "classes": list(bundle.classes),
        "input_size": list(input_shape), "mean": list(bundle.mean), "std": list(bundle.std),
        "train_config": cfg.to_dict(),
        "metrics": {"test_acc": last["test_acc"], "test_loss": last["test_loss"],
                    "epochs": len(result.history),
                    "train_seconds": round(sum(e["seconds"] for e in result.history), 2)},
        "created_at": datetime.strptime(version, VERSION_FORMAT).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "files": ["model.pt2", "metrics.json", "curves.png", "confusion_matrix.png"],
        "examples": examples,
    }
