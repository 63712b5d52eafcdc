"""When drift starts a retrain: the served version's newest K drift reports all say drift,
and the model's last drift retrain was at least the cooldown ago.

The app writes a report per check under ``metrics/<name>/monitoring/reports/<version>/``
(trainer.contract.lifecycle.monitoring.DriftReport; report ids sort by time); this reads the store
only, so the app needs no permission of any kind for it. A report that cannot be read is
skipped with a warning, as the monitor does.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from trainer.contract.errors import ConfigError, MetaError, ObjectNotFound
from trainer.contract.layout import ModelKeys
from trainer.contract.lifecycle.monitoring import DriftReport
from trainer.contract.lifecycle.retrain import DRIFT, RetrainRecord, parse_utc_time
from trainer.publish.latest import latest_version
from trainer.retrain.slot import retrain_records
from trainer.store import Store

log = logging.getLogger(__name__)

DURATION = re.compile(r"(\d+)(s|m|h|d)")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
DURATION_RULE = "a duration > 0 in s, m, h or d, such as 30m, 6h or 1d"
CLOCK_SKEW = timedelta(minutes=5)  # between the pods that write and read the records


def parse_duration(key: str, text: str) -> timedelta:
    """``30m``, ``6h``, ``1d`` -> a timedelta; ConfigError naming ``key`` otherwise."""
    match = DURATION.fullmatch(str(text).strip())
    if not match or int(match.group(1)) == 0:
        raise ConfigError(f"{key}: {text!r} is not allowed; use {DURATION_RULE}", key=key)
    return timedelta(seconds=int(match.group(1)) * UNITS[match.group(2)])


@dataclass(frozen=True)
class Trigger:
    """A drift retrain to start: the served version and the newest report that said drift."""

    version: str
    report: str


def newest_reports(store: Store, name: str, version: str, count: int
                   ) -> list[tuple[str, DriftReport]]:
    """The newest ``count`` readable reports of ``version`` with their keys, newest first."""
    found: list[tuple[str, DriftReport]] = []
    for key in sorted(store.list(ModelKeys(name).reports(version)), reverse=True):
        if len(found) == count:
            break
        try:
            found.append((key, DriftReport.from_json(store.get_bytes(key))))
        except ObjectNotFound:
            continue
        except MetaError as e:
            log.warning("drift report %s skipped: %s", key, e)
    return found


def last_drift_retrain(store: Store, name: str, now: datetime) -> RetrainRecord | None:
    """The newest drift retrain requested by ``now`` (and a clock's skew): a record dated
    later is damaged, and would hold every retrain back until then."""
    latest = now + CLOCK_SKEW
    return next((r for r in retrain_records(store, name)
                 if r.reason == DRIFT and parse_utc_time(r.requested_at) <= latest), None)


def drift_trigger(store: Store, name: str, windows: int, cooldown: timedelta,
                  now: datetime | None = None) -> Trigger | None:
    """A Trigger when drift calls for a retrain now, else None (the reason is logged)."""
    version = latest_version(store, name)
    if version is None:
        log.info("no retrain on drift: %s has no served version", name)
        return None
    reports = newest_reports(store, name, version, windows)
    drifted = [key for key, report in reports if report.drift]
    if len(drifted) < windows:
        log.info("no retrain on drift: %d of the newest %d drift checks of %s %s found drift",
                 len(drifted), windows, name, version)
        return None
    newest = reports[0][0]
    now = now or datetime.now(UTC)
    last = last_drift_retrain(store, name, now)
    if last is not None:
        if last.report == newest:
            log.info("no retrain on drift: report %s started retrain %s already", newest,
                     last.id)
            return None
        since = now - parse_utc_time(last.requested_at)
        if since < cooldown:
            log.info("no retrain on drift: the last one (%s) started %s ago, within the "
                     "cooldown of %s", last.id, since, cooldown)
            return None
    log.info("retrain on drift: the newest %d drift checks of %s %s found drift (newest: %s)",
             windows, name, version, newest)
    return Trigger(version, newest)
