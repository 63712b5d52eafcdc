"""``python -m trainer promote``: serve a version on purpose, past the gate or back in time.

A person's promotion takes the model's next publication sequence and points latest.json at
the version (``promoted_by: person``), so latest.json still only moves forward: a rollback
is a new move to an older version, never a write of an older number, and a publication
that was judged against the version served before it is not moved over this choice
(trainer.publish.latest). The app follows latest.json within a poll; with
MLFLOW_TRACKING_URI set, MLflow's alias ``current`` follows too.
"""

from __future__ import annotations

import logging

from trainer.contract.errors import MetaError, ObjectNotFound, StoreError, TrainstackError
from trainer.contract.layout import ModelKeys
from trainer.contract.lifecycle.promotion import BY_PERSON, describe
from trainer.contract.records import Latest
from trainer.contract.schema import VersionMeta
from trainer.publish.latest import allocate_sequence, log_move, move_latest, read_latest
from trainer.store import Store

log = logging.getLogger(__name__)


class NoSuchVersion(TrainstackError):
    """The version asked for is not a complete published version of the model."""


def complete_version(store: Store, name: str, version: str) -> VersionMeta:
    """The meta.json of a complete version of ``name`` (written after every file)."""
    keys = ModelKeys(name)
    try:
        key = keys.meta(version)
    except ValueError:
        key = None
    if key is None or "/" in version:
        raise NoSuchVersion(f"--version {version!r} is not a version name; list them under "
                            f"{keys.versions}")
    try:
        meta = VersionMeta.from_json(store.get_bytes(key))
    except ObjectNotFound:
        raise NoSuchVersion(f"{name} has no complete version {version!r} ({key} is missing); "
                            f"complete versions have a meta.json under {keys.versions}") from None
    except MetaError as e:
        raise NoSuchVersion(f"{key} is unreadable ({e}): that version cannot be served") from None
    if meta.version != version or meta.name != name:
        raise NoSuchVersion(f"{key} describes {meta.name} version {meta.version}, not "
                            f"{name} version {version}")
    return meta


def promote(store: Store, name: str, version: str) -> bool:
    """Point latest.json at ``version``; returns whether it moved (False: served already)."""
    meta = complete_version(store, name, version)
    current, _ = read_latest(store, name)
    if current is not None and current.version == version:
        log.info("%s version %s is served already: nothing to do", name, version)
        return False
    sequence = allocate_sequence(store, name)
    target = Latest(version, sequence, promoted_by=BY_PERSON, version_sequence=meta.sequence)
    moved, before = move_latest(store, name, target)
    log_move(name, version, sequence, moved, before, promoted_by=BY_PERSON,
             verdict=describe(meta.promotion))
    if not moved:
        raise StoreError(f"{name}: another publication or promotion moved latest.json to "
                         f"{before.version if before else 'nothing'} at the same time; "
                         f"run promote again to serve {version}")
    log.info("%s now serves version %s (it served %s); the app follows within a poll",
             name, version, before.version if before else "nothing")
    follow_in_mlflow(store, name)
    return True


def follow_in_mlflow(store: Store, name: str) -> None:
    """MLflow's alias ``current`` onto what latest.json names, when MLflow is configured.
    Never fatal: the store's latest.json is what the app serves."""
    import os

    from trainer.tracking import tracker

    uri = tracker.tracking_uri()
    if uri is None:
        return
    for key, value in {**tracker.MLFLOW_HTTP_DEFAULTS, **tracker.MLFLOW_TELEMETRY_DEFAULT}.items():
        os.environ.setdefault(key, value)  # before mlflow is imported, as the trainer does
    try:
        from trainer.publish.latest import latest_version
        from trainer.tracking.mlflow_run import MlflowRuns

        MlflowRuns(uri).follow_latest(name, lambda: latest_version(store, name))
    except Exception as e:  # noqa: BLE001  MLflow down must not undo a promotion
        from trainer.contract.urls import display_url, redact_urls

        log.warning("MLflow at %s: alias of %s not moved (%s); latest.json is moved",
                    display_url(uri), name, redact_urls(str(e)))
