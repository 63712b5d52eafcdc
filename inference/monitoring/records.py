"""Monitoring's files in the store (trainer.contract.layout: ``metrics/<name>/monitoring/``):
windows and reports written, a version's reference and its recent windows read back.

A window or report that cannot be read (cut short, another schema, not JSON) is skipped
with a warning naming its key: one bad file never stops a check.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from trainer.contract.errors import MetaError, ObjectNotFound
from trainer.contract.layout import ModelKeys
from trainer.contract.lifecycle.monitoring import SCHEMA, DriftReport, PredictionWindow, Reference
from trainer.contract.records import Latest
from trainer.contract.schema import VersionMeta
from trainer.store import Store

log = logging.getLogger(__name__)


def record_id(replica: str, when: datetime | None = None) -> str:
    """A key part that sorts by time (microseconds) and is unique per replica."""
    return f"{(when or datetime.now(UTC)).strftime('%Y%m%dT%H%M%S%fZ')}-{replica}"


def window_key(window: PredictionWindow) -> str:
    return ModelKeys(window.model).window(window.version, record_id(window.replica))


def report_key(report: DriftReport, replica: str, report_id: str | None = None) -> str:
    return ModelKeys(report.model).report(report.version, report_id or record_id(replica))


def served_version(store: Store, name: str) -> str:
    """The version latest.json names (ObjectNotFound when nothing is published)."""
    return Latest.from_json(store.get_bytes(ModelKeys(name).latest)).version


def read_reference(store: Store, name: str, version: str) -> Reference | None:
    """The version's reference; None for a version published before references existed."""
    keys = ModelKeys(name)
    meta = VersionMeta.from_json(store.get_bytes(keys.meta(version)))
    if not meta.reference:
        return None
    return Reference.from_json(store.get_bytes(keys.version_file(version, meta.reference)))


def recent_windows(store: Store, name: str, version: str, count: int
                   ) -> list[PredictionWindow]:
    """The newest ``count`` readable windows of ``version`` (every replica's), oldest first."""
    keys = sorted(store.list(ModelKeys(name).windows(version)), reverse=True)
    found: list[PredictionWindow] = []
    for key in keys:
        if len(found) == count:
            break
        try:
            window = PredictionWindow.from_json(store.get_bytes(key))
        except ObjectNotFound:
            continue  # deleted since the listing
        except MetaError as e:
            log.warning("monitoring: skipped %s: %s", key, e)
            continue
        if window.schema != SCHEMA or (window.model, window.version) != (name, version):
            log.warning("monitoring: skipped %s: a window of schema %s for %s %s", key,
                        window.schema, window.model, window.version)
            continue
        found.append(window)
    return found[::-1]


def recent_reports(store: Store, name: str, version: str, count: int) -> list[DriftReport]:
    """The newest ``count`` readable reports of ``version``, oldest first."""
    found: list[DriftReport] = []
    for key in sorted(store.list(ModelKeys(name).reports(version)), reverse=True):
        if len(found) == count:
            break
        try:
            found.append(DriftReport.from_json(store.get_bytes(key)))
        except ObjectNotFound:
            continue
        except MetaError as e:
            log.warning("monitoring: skipped %s: %s", key, e)
    return found[::-1]
