"""Published versions: find them, download and verify one, load its program.

The store layout (trainer.contract.layout): ``models/<name>/latest.json`` points at
``models/<name>/versions/<version>/``, and moves only after the version is complete;
meta.json is read with the one schema the trainer writes with (trainer.contract.schema).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from trainer.contract.errors import MetaError, ObjectNotFound
from trainer.contract.layout import (
    META_FILE,
    METRICS_FILE,
    MODEL_FILE,
    ModelKeys,
    name_of_latest_key,
    name_of_progress_key,
)
from trainer.contract.records import Latest
from trainer.contract.schema import VersionMeta, VersionMetrics
from trainer.store import Store

log = logging.getLogger(__name__)


class BrokenVersion(RuntimeError):
    """A published version that can never be served (bad files, model does not run)."""


@dataclass(frozen=True)
class ModelVersion:
    """Everything about one loaded version; immutable, so readers never see it change."""

    name: str
    version: str
    meta: VersionMeta
    metrics: VersionMetrics | None
    model: Any
    directory: Path
    examples: list[Path] = field(default_factory=list)

    @property
    def test_acc(self) -> float:
        return self.meta.metrics.test_acc

    def file(self, name: str) -> Path | None:
        path = self.directory / name
        return path if path.is_file() else None


def read_meta(store: Store, name: str, version: str) -> VersionMeta:
    """A version's meta.json, validated by the one schema; BrokenVersion if it does not fit
    (ObjectNotFound if there is none)."""
    key = ModelKeys(name).meta(version)
    try:
        meta = VersionMeta.from_json(store.get_bytes(key))
    except MetaError as e:
        raise BrokenVersion(f"{key}: {e}") from None
    if meta.version != version:  # a folder copied or renamed by hand: not what it says
        raise BrokenVersion(f"{key} describes version {meta.version!r}, not {version!r}")
    return meta


def discover_names(store: Store) -> tuple[set[str], set[str]]:
    """``(names with a models/<name>/latest.json, names with a run's progress record)``,
    from one recursive listing of ``models/``."""
    published, running = set(), set()
    for key in store.list("models/"):
        if name := name_of_latest_key(key):
            published.add(name)
        elif name := name_of_progress_key(key):
            running.add(name)
    return published, running


def read_latest(store: Store, name: str) -> Latest:
    """``models/<name>/latest.json`` (trainer.contract.records.Latest); BrokenVersion if malformed."""
    key = ModelKeys(name).latest
    try:
        return Latest.from_json(store.get_bytes(key))
    except MetaError as e:
        raise BrokenVersion(f"{key}: {e}") from None


def latest_versions(store: Store, names: set[str]) -> tuple[dict[str, Latest], set[str]]:
    """``({model name: its latest.json}, names whose latest.json is gone)``."""
    found, gone = {}, set()
    for name in sorted(names):
        try:
            found[name] = read_latest(store, name)
        except ObjectNotFound:
            gone.add(name)
        except BrokenVersion as e:
            log.warning("ignoring unreadable models/%s/latest.json: %s", name, e)
    return found, gone


def published_versions(store: Store, name: str) -> list[str]:
    """Versions of ``name`` that have a meta.json (written after their files)."""
    keys = ModelKeys(name)
    return sorted(v for key in store.list(keys.versions) if (v := keys.version_of_meta_key(key)))


def publication_order(sequence: int, version: str) -> tuple[int, str]:
    """Sort key of one model's versions: ``sequence`` (meta.json, latest.json: when the
    publication completed, whatever the publishing pod's clock said), then the name, which
    only orders versions written before sequences existed (all 0)."""
    return sequence, version


def verify_model(model: Any, meta: VersionMeta, device: torch.device) -> None:
    """Run a test input of ``input_size``: the output must be ``1 x len(classes)``."""
    x = torch.zeros(1, *meta.input_size, device=device)
    with torch.inference_mode():
        out = model(x)
    expected = (1, len(meta.classes))
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise BrokenVersion(f"model output is {shape}, expected {expected}")
    if not torch.isfinite(out).all():
        raise BrokenVersion("model output on a test input is not finite")


def download_version(store: Store, name: str, version: str, cache_dir: Path,
                     device: str = "cpu") -> ModelVersion:
    """Download to a temp dir, verify, then rename into place: never half a version.

    A version without meta.json (deleted, or its upload never finished) is a
    BrokenVersion like any other unusable one, not a store outage.
    """
    keys = ModelKeys(name)
    final = cache_dir / name / version
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{version}."))
    try:
        try:
            meta = read_meta(store, name, version)
        except ObjectNotFound:
            raise BrokenVersion(f"{keys.meta(version)} is missing: the version was deleted "
                                "or never finished") from None
        (tmp / META_FILE).write_bytes(meta.to_json())
        for rel in meta.downloads:
            try:
                store.get_file(keys.version_file(version, rel), tmp / rel)
            except ObjectNotFound:
                raise BrokenVersion(f"{keys.version_file(version, rel)} is listed in "
                                    f"{META_FILE} but missing") from None
        model = load_model(tmp / MODEL_FILE, meta, torch.device(device))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    examples = [final / rel for rel in meta.examples]
    return ModelVersion(name, version, meta, _load_metrics(final / METRICS_FILE), model, final,
                        examples)


def load_model(path: Path, meta: VersionMeta, device: torch.device) -> Any:
    """The program's module on ``device`` (a GPU gets every weight and constant moved)."""
    try:
        program = torch.export.load(str(path))
        if device.type != "cpu":
            from torch.export.passes import move_to_device_pass

            program = move_to_device_pass(program, device)
        model = program.module()
        verify_model(model, meta, device)
    except BrokenVersion:
        raise
    except Exception as e:  # a torch.export archive can fail in many ways; all mean "broken"
        raise BrokenVersion(f"{MODEL_FILE} does not load or run: {type(e).__name__}: {e}") from e
    return model


def _load_metrics(path: Path) -> VersionMetrics | None:
    """metrics.json is for display: a missing or malformed one hides the Training tab's details."""
    try:
        return VersionMetrics.from_json(path.read_bytes())
    except (OSError, MetaError) as e:
        log.warning("%s not shown: %s", path, e)
        return None
