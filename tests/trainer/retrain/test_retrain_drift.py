"""When drift starts a retrain (trainer.retrain.drift): the newest K drift checks of the
served version all found drift, the cooldown since the last drift retrain has passed, and
its report did not start one already. Real stores, real records."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from trainer.contract.errors import ConfigError
from trainer.contract.layout import ModelKeys
from trainer.contract.lifecycle.monitoring import DriftReport
from trainer.contract.lifecycle.retrain import RetrainRecord
from trainer.contract.records import Latest
from trainer.retrain.drift import drift_trigger, parse_duration

NAME, VERSION = "smallcnn-digits", "20261207T100000Z-c7f86644a2"
KEYS = ModelKeys(NAME)
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def report(store, minute: int, drift: bool) -> str:
    key = KEYS.report(VERSION, f"20261207T11{minute:02d}00000000Z-app-0")
    store.put_bytes(key, DriftReport(
        model=NAME, version=VERSION, checked_at="2026-12-07T11:00:00Z", n=256, drift=drift,
        estimated_accuracy=0.7, test_accuracy=0.9, alpha=0.01, tests={}).to_json())
    return key


def last_retrain(store, requested: datetime, report_key: str) -> None:
    stamp = requested.strftime("%Y-%m-%dT%H:%M:%SZ")
    store.put_bytes(KEYS.retrain("20261207T000000Z-aaaaaa"), RetrainRecord(
        id="20261207T000000Z-aaaaaa", name=NAME, reason="drift", state="finished",
        requested_at=stamp, updated_at=stamp, report=report_key).to_json())


@pytest.fixture
def store(local_store):
    local_store.ensure_buckets()
    local_store.put_bytes(KEYS.latest, Latest(VERSION, 1).to_json())
    return local_store


def test_nothing_served_nothing_to_retrain(local_store):
    local_store.ensure_buckets()
    assert drift_trigger(local_store, NAME, 3, timedelta(hours=24), NOW) is None


def test_k_drift_checks_in_a_row_start_a_retrain_and_fewer_do_not(store):
    report(store, 1, True)
    report(store, 2, False)
    report(store, 3, True)
    report(store, 4, True)
    assert drift_trigger(store, NAME, 3, timedelta(hours=24), NOW) is None  # 2 in a row
    newest = report(store, 5, True)
    found = drift_trigger(store, NAME, 3, timedelta(hours=24), NOW)
    assert found is not None and (found.version, found.report) == (VERSION, newest)


def test_the_cooldown_and_the_report_that_started_one_hold_it_back(store):
    newest = [report(store, m, True) for m in (1, 2, 3)][-1]
    last_retrain(store, NOW - timedelta(hours=2), report(store, 0, True))
    assert drift_trigger(store, NAME, 3, timedelta(hours=24), NOW) is None
    assert drift_trigger(store, NAME, 3, timedelta(hours=1), NOW).report == newest
    last_retrain(store, NOW - timedelta(hours=30), newest)  # this very report started one
    assert drift_trigger(store, NAME, 3, timedelta(hours=24), NOW) is None


def test_a_damaged_report_is_skipped_not_fatal(store):
    for minute in (1, 2):
        report(store, minute, True)
    store.put_bytes(KEYS.report(VERSION, "20261207T1103000000000Z-app-0"), b"{cut")
    assert drift_trigger(store, NAME, 2, timedelta(hours=24), NOW) is not None


@pytest.mark.parametrize("text", ["0h", "1w", "-5m", "soon", ""])
def test_a_bad_cooldown_names_the_flag(text):
    with pytest.raises(ConfigError, match="--cooldown.*a duration > 0"):
        parse_duration("--cooldown", text)


@pytest.mark.parametrize("stamp", ["n/a", "2099-01-01T00:00:00Z"])
def test_a_damaged_or_future_retrain_record_neither_lifts_nor_freezes_the_cooldown(store, stamp):
    """A record whose time is not a time (it sorted first as a string and made the cooldown
    count from year 1) or lies in the future (it held every retrain back until then) is not
    the last drift retrain: the real one, 30 minutes old, still holds the cooldown; with
    only the bad one, drift retrains as if none had run."""
    for minute in (1, 2, 3):
        report(store, minute, True)
    bad = {"id": "20200101T000000Z-bbbbbb", "name": NAME, "reason": "drift",
           "state": "finished", "requested_at": stamp, "updated_at": stamp, "report": ""}
    store.put_bytes(KEYS.retrain(bad["id"]), json.dumps(bad).encode())
    assert drift_trigger(store, NAME, 3, timedelta(hours=24), NOW) is not None
    last_retrain(store, NOW - timedelta(minutes=30), report(store, 0, True))
    assert drift_trigger(store, NAME, 3, timedelta(hours=24), NOW) is None
