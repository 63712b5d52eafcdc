"""Find, download, verify and hot-swap published model versions.

The store layout (trainer.layout): ``models/<name>/latest.json`` points at
``models/<name>/versions/<version>/``, and moves only after the version is complete;
meta.json is read with the one schema the trainer writes with (trainer.schema).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from trainer.errors import MetaError, ObjectNotFound, StoreError
from trainer.layout import META_FILE, METRICS_FILE, MODEL_FILE, ModelKeys, name_of_latest_key
from trainer.schema import VersionMeta, VersionMetrics
from trainer.storage import Store

log = logging.getLogger(__name__)

# Finding model names lists all of models/ (every run's checkpoints too): do it at most
# this often; each known model's small latest.json is still read on every poll.
DISCOVERY_SECONDS = 60.0


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


def read_json(store: Store, key: str) -> Any:
    try:
        return json.loads(store.get_bytes(key))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BrokenVersion(f"{key} is not valid JSON: {e}") from None


def read_meta(store: Store, key: str) -> VersionMeta:
    """A version's meta.json, validated by the one schema; BrokenVersion if it does not fit."""
    try:
        return VersionMeta.from_json(store.get_bytes(key))
    except MetaError as e:
        raise BrokenVersion(f"{key}: {e}") from None


def model_names(store: Store) -> set[str]:
    """Every ``<name>`` with a ``models/<name>/latest.json`` (one recursive listing)."""
    return {name for key in store.list("models/") if (name := name_of_latest_key(key))}


def read_latest(store: Store, name: str) -> str:
    """The version ``models/<name>/latest.json`` points at; BrokenVersion if malformed."""
    key = ModelKeys(name).latest
    latest = read_json(store, key)
    if not isinstance(latest, dict) or not isinstance(latest.get("version"), (str, int)):
        raise BrokenVersion(f'{key} is not {{"version": ...}}: {latest!r:.200}')
    return str(latest["version"])


def latest_versions(store: Store, names: set[str]) -> tuple[dict[str, str], set[str]]:
    """``({model name: latest version}, names whose latest.json is gone)``."""
    found, gone = {}, set()
    for name in sorted(names):
        try:
            found[name] = read_latest(store, name)
        except ObjectNotFound:
            gone.add(name)
        except BrokenVersion as e:
            log.warning("ignoring unreadable models/%s/latest.json: %s", name, e)
    return found, gone


def verify_model(model: Any, meta: VersionMeta) -> None:
    """Run a test input of ``input_size``: the output must be ``1 x len(classes)``."""
    x = torch.zeros(1, *meta.input_size)
    with torch.inference_mode():
        out = model(x)
    expected = (1, len(meta.classes))
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise BrokenVersion(f"model output is {shape}, expected {expected}")
    if not torch.isfinite(out).all():
        raise BrokenVersion("model output on a test input is not finite")


def download_version(store: Store, name: str, version: str, cache_dir: Path) -> ModelVersion:
    """Download to a temp dir, verify, then rename into place: never half a version."""
    keys = ModelKeys(name)
    final = cache_dir / name / version
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{version}."))
    try:
        meta = read_meta(store, keys.meta(version))
        (tmp / META_FILE).write_bytes(meta.to_json())
        for rel in meta.downloads:
            try:
                store.get_file(keys.version_file(version, rel), tmp / rel)
            except ObjectNotFound:
                raise BrokenVersion(f"{keys.version_file(version, rel)} is listed in "
                                    f"{META_FILE} but missing") from None
        model = load_model(tmp / MODEL_FILE, meta)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    examples = [final / rel for rel in meta.examples]
    return ModelVersion(name, version, meta, _load_metrics(final / METRICS_FILE), model, final,
                        examples)


def load_model(path: Path, meta: VersionMeta) -> Any:
    try:
        model = torch.export.load(str(path)).module()
        verify_model(model, meta)
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


class Registry:
    """Holds the served version; a background poller swaps in newer ones atomically."""

    def __init__(self, store: Store, cache_dir: Path, model_name: str | None = None,
                 poll_seconds: float = 15.0, max_backoff: float = 300.0):
        self.store = store
        self.cache_dir = Path(cache_dir)
        self.model_name = model_name
        self.poll_seconds = poll_seconds
        self.max_backoff = max_backoff
        self.current: ModelVersion | None = None  # replaced by one assignment, never mutated
        self.rejected: dict[tuple[str, str], str] = {}  # broken versions: never retried
        self.last_error: str | None = None
        # True after a successful poll that found nothing published: the pod can serve
        # its "no model yet" page, so it counts as ready (see api.readyz).
        self.nothing_published = False
        self.on_swap: list[Callable[[ModelVersion], None]] = []
        self._meta_cache: dict[str, VersionMeta] = {}  # published versions are immutable
        self.discovery_seconds = DISCOVERY_SECONDS
        self._names: set[str] = set()  # model names found by the last discovery
        self._discovered_at: float | None = None  # time.monotonic() of that discovery
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def resolve(self) -> tuple[str, str] | None:
        """The (model name, version) that should be served now, if any."""
        if self.model_name:
            try:
                return self.model_name, read_latest(self.store, self.model_name)
            except ObjectNotFound:
                return None
            except BrokenVersion as e:
                log.warning("latest.json of %s is unreadable: %s", self.model_name, e)
                return None
        versions, gone = latest_versions(self.store, self.known_names())
        if gone:
            self._discovered_at = None  # a model was deleted: look again next poll
        if not versions:
            return None
        # Versions are sortable UTC timestamps: the newest model across all names wins.
        name = max(versions, key=lambda n: (versions[n], n))
        return name, versions[name]

    def known_names(self) -> set[str]:
        """Model names, re-discovered when none is known yet or the last look is stale."""
        now = time.monotonic()
        stale = (self._discovered_at is None
                 or now - self._discovered_at >= self.discovery_seconds)
        if stale or not self._names:
            self._names = model_names(self.store)
            self._discovered_at = now
        return self._names

    def check_once(self) -> bool:
        """Poll once; return True when a new version was swapped in. Raises StoreError."""
        with self._lock:  # one check at a time (poller thread vs. an explicit call)
            target = self.resolve()
            self.nothing_published = target is None
            current = self.current
            if target is None or target in self.rejected:
                return False
            if current and (current.name, current.version) == target:
                return False
            log.info("loading model %s version %s", *target)
            try:
                loaded = download_version(self.store, *target, self.cache_dir)
            except BrokenVersion as e:
                self.rejected[target] = str(e)
                log.error("skipping broken version %s/%s (keeping %s): %s", *target,
                          current.version if current else "no model", e)
                return False
            self.current = loaded  # the atomic swap: one reference assignment
            self._prune(loaded)
        log.info("now serving %s version %s", loaded.name, loaded.version)
        for callback in self.on_swap:
            callback(loaded)
        return True

    def _prune(self, keep: ModelVersion) -> None:
        """Keep the served version and the one before (a page may still show its files)."""
        model_dir = self.cache_dir / keep.name
        versions = sorted(p for p in model_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
        for old in versions[:-2]:
            if old != keep.directory:
                shutil.rmtree(old, ignore_errors=True)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="model-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                self.check_once()
                failures, self.last_error = 0, None
            except StoreError as e:
                failures += 1
                self.last_error, self.nothing_published = str(e), False
                # Not only outages: AccessDenied or a missing bucket land here too.
                log.warning("store error (%s) at %s, %d in a row, still serving %s: %s",
                            type(e).__name__, self.store.url, failures,
                            self.current.version if self.current else "no model", e)
            except Exception:  # the poller must never die: log and keep serving
                failures += 1
                log.exception("unexpected error while checking for a new model")
            delay = min(self.max_backoff, self.poll_seconds * 2 ** min(failures, 8))
            self._stop.wait(delay)

    def list_versions(self, name: str) -> list[VersionMeta]:
        """Published versions of ``name``, newest first, from their meta.json files."""
        keys = ModelKeys(name)
        rows = []
        for key in self.store.list(keys.versions):
            if keys.version_of_meta_key(key) is None:
                continue
            if key not in self._meta_cache:
                try:
                    self._meta_cache[key] = read_meta(self.store, key)
                except (BrokenVersion, ObjectNotFound):
                    continue
            rows.append(self._meta_cache[key])
        return sorted(rows, key=lambda m: m.version, reverse=True)
