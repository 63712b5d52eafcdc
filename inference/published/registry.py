"""Hot-swap published model versions: a poller follows ``latest.json``.

A version that cannot be served (files missing or deleted, a program that does not run)
is rejected once and never retried; the app then serves the newest older version of the
same model that loads. Only store errors (unreachable, denied) count as outages and back
the poller off.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from inference.published.versions import (
    BrokenVersion,
    ModelVersion,
    discover_names,
    download_version,
    latest_versions,
    publication_order,
    published_versions,
    read_latest,
    read_meta,
)
from trainer.contract.errors import MetaError, ObjectNotFound, StoreError
from trainer.contract.layout import META_FILE, ModelKeys
from trainer.contract.records import Latest
from trainer.contract.schema import VersionMeta
from trainer.store import Store

__all__ = ["BrokenVersion", "ModelVersion", "RefusedLatest", "Registry"]

log = logging.getLogger(__name__)

# Finding model names lists all of models/ (every run's checkpoints too): do it at most
# this often; each known model's small latest.json is still read on every poll.
DISCOVERY_SECONDS = 60.0


@dataclass(frozen=True)
class RefusedLatest:
    """latest.json names ``version``, which this app cannot serve (``reason``): it serves
    ``serving``, the last published version before it that loads."""

    name: str
    version: str
    reason: str
    serving: str


def _cached_order(folder: Path) -> tuple[int, str]:
    """A cached version's publication order, from the meta.json downloaded with it
    (unreadable: first of all)."""
    try:
        meta = VersionMeta.from_json((folder / META_FILE).read_bytes())
    except (OSError, MetaError):
        return -1, folder.name
    return publication_order(meta.sequence, meta.version)


class Registry:
    """Holds the served version; a background poller swaps in newer ones atomically."""

    def __init__(self, store: Store, cache_dir: Path, model_name: str | None = None,
                 poll_seconds: float = 15.0, max_backoff: float = 300.0, device: str = "cpu"):
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
        self.device = device
        self.on_swap: list[Callable[[ModelVersion], None]] = []
        # Run on a loaded version before it is swapped in (the app's warm-up); an
        # exception rejects the version like a broken file.
        self.prepare: Callable[[ModelVersion], None] | None = None
        self._settled: tuple[tuple[str, str], ModelVersion | None] | None = None
        self._target: tuple[str, Latest] | None = None  # what latest.json named last
        self._meta_cache: dict[str, VersionMeta | None] = {}  # None: broken
        self.discovery_seconds = DISCOVERY_SECONDS
        self._names: set[str] = set()  # model names found by the last discovery
        self.progress_names: set[str] = set()  # names with runs' progress records (ditto)
        self._discovered_at: float | None = None  # time.monotonic() of that discovery
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def resolve(self) -> tuple[str, Latest] | None:
        """The model name and its latest.json that should be served now, if any."""
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
        # Sequences order one name's versions only; across names the version names'
        # UTC timestamps decide which model is the newest.
        name = max(versions, key=lambda n: (versions[n].version, n))
        return name, versions[name]

    def known_names(self) -> set[str]:
        """Model names, re-discovered when none is known yet or the last look is stale."""
        now = time.monotonic()
        stale = (self._discovered_at is None
                 or now - self._discovered_at >= self.discovery_seconds)
        if stale or not self._names:
            self._names, self.progress_names = discover_names(self.store)
            self._discovered_at = now
        return self._names

    def check_once(self) -> bool:
        """Poll once; return True when a new version was swapped in. Raises StoreError."""
        with self._lock:  # one check at a time (poller thread vs. an explicit call)
            target = self.resolve()
            self.nothing_published = target is None
            if target is None:
                return False
            self._target = target
            loaded = self._newest_loadable(*target)
            if loaded is None:
                return False
            before, self.current = self.current, loaded  # the atomic swap: one assignment
            self._prune(loaded, before)
        log.info("now serving %s version %s", loaded.name, loaded.version)
        for callback in self.on_swap:
            callback(loaded)
        return True

    def _newest_loadable(self, name: str, latest: Latest) -> ModelVersion | None:
        """The version ``latest`` names, or else the one of ``name`` published last before
        it that loads; None when that is the one served already (or nothing loads)."""
        current = self.current
        if self._settled == ((name, latest), current):
            return None  # this target was worked through already: nothing new to try
        for candidate in self._candidates(name, latest):
            if current and (current.name, current.version) == (name, candidate):
                break
            if (name, candidate) in self.rejected:
                continue
            log.info("loading model %s version %s", name, candidate)
            try:
                return self._load(name, candidate)
            except BrokenVersion as e:
                self.rejected[(name, candidate)] = str(e)
                log.error("skipping broken version %s/%s (serving %s): %s", name, candidate,
                          current.version if current else "no model", e)
        self._settled = ((name, latest), current)
        return None

    def _candidates(self, name: str, latest: Latest) -> Iterator[str]:
        """The target first; if it cannot be served, the versions published before it,
        last published first (by sequence: pods' clocks may disagree with the names),
        leaving out those the promotion gate refused (candidates are never served by
        default: only a person's promotion points latest.json at one)."""
        yield latest.version
        if (name, latest.version) not in self.rejected:
            return
        # The version's own place in publication order: after a person's promotion (a
        # rollback) latest.json's sequence is newer than the version it names.
        target = publication_order(latest.published_sequence, latest.version)
        older = [meta.version for meta in self.list_versions(name)
                 if publication_order(meta.sequence, meta.version) < target
                 and (meta.promotion is None or meta.promotion.promoted)]
        if older:
            log.info("latest.json of %s names unusable version %s: falling back to the "
                     "last published version before it that loads", name, latest.version)
        yield from older

    def _load(self, name: str, version: str) -> ModelVersion:
        loaded = download_version(self.store, name, version, self.cache_dir, self.device)
        if self.prepare:
            try:
                self.prepare(loaded)
            except Exception as e:
                log.exception("preparing %s/%s failed", name, version)
                raise BrokenVersion(f"preparing it to serve failed: {type(e).__name__}: "
                                    f"{e}") from e
        return loaded

    @property
    def refused_latest(self) -> RefusedLatest | None:
        """The version ``latest.json`` names (and MLflow's alias ``current``), while this
        app cannot serve it and serves an older one instead; None otherwise."""
        target, current = self._target, self.current
        if target is None or current is None:
            return None
        name, latest = target
        reason = self.rejected.get((name, latest.version))
        if reason is None or (current.name, current.version) == (name, latest.version):
            return None
        return RefusedLatest(name, latest.version, reason, current.version)

    def _prune(self, keep: ModelVersion, before: ModelVersion | None) -> None:
        """Keep the served version and the one served just before it (a page may still
        show its files); without one (a new process on an old cache dir), the cached
        version published last before the served one. Publication order is the sequence
        in meta.json: version names carry the publishing pods' clocks, which may disagree."""
        model_dir = self.cache_dir / keep.name
        folders = [p for p in model_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
        kept = {keep.directory}
        if before is not None and before.name == keep.name:
            kept.add(before.directory)
        else:
            mine = publication_order(keep.meta.sequence, keep.version)
            earlier = [(order, p) for p in folders if (order := _cached_order(p)) < mine]
            if earlier:
                kept.add(max(earlier)[1])
        for folder in folders:
            if folder not in kept:
                shutil.rmtree(folder, ignore_errors=True)

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
        """Published versions of ``name`` (those with a readable meta.json), last published
        first (trainer.contract.schema's ``sequence``)."""
        metas = (self._published_meta(name, v) for v in published_versions(self.store, name))
        return sorted((m for m in metas if m is not None), reverse=True,
                      key=lambda m: publication_order(m.sequence, m.version))

    def meta_of(self, name: str, version: str) -> VersionMeta | None:
        """A published version's meta.json (None: absent or broken), read once."""
        return self._published_meta(name, version)

    @property
    def latest(self) -> Latest | None:
        """What latest.json named at the last poll (who promoted it: ``promoted_by``)."""
        target = self._target
        return target[1] if target is not None else None

    def _published_meta(self, name: str, version: str) -> VersionMeta | None:
        """A version's meta.json, read once (published ones never change); None if broken."""
        key = ModelKeys(name).meta(version)
        if key not in self._meta_cache:
            try:
                self._meta_cache[key] = read_meta(self.store, name, version)
            except ObjectNotFound:  # deleted since the listing
                return None
            except BrokenVersion as e:
                log.warning("version %s/%s is not listed: %s", name, version, e)
                self._meta_cache[key] = None
        return self._meta_cache[key]
