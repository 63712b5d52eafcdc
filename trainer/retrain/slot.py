"""One retrain of a model at a time, and a record of each: conditional writes in the store.

Two retrains of one model train different runs (the retrain's id is part of the run's
identity), so the run lease cannot keep them apart. The model's retrain slot does:
``models/<name>/retrain-slot.json`` (trainer.contract.lifecycle.retrain.RetrainSlot), taken by
``put_if_absent`` or ``put_if_match`` on the tag read. A slot held by another retrain is
taken over only once that one is over by the API server's account: its training job has
ended or is gone, or, before it made one, its Job has. Liveness is never judged by clocks.

Each retrain also rewrites its own record (``models/<name>/retrains/<id>.json``) as it goes,
for the app's Training tab.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from trainer.contract.errors import MetaError, ObjectNotFound, PreconditionFailed, TrainstackError
from trainer.contract.layout import ModelKeys
from trainer.contract.lifecycle.retrain import (
    ENDED,
    STARTING,
    TIME_FORMAT,
    RetrainRecord,
    RetrainSlot,
    RetrainTrigger,
)
from trainer.store import Store

log = logging.getLogger(__name__)

ATTEMPTS = 20


def utc_now() -> str:
    return datetime.now(UTC).strftime(TIME_FORMAT)


class Slot:
    """The model's retrain slot, as one retrain (``retrain_id``, Job ``job``) sees it."""

    def __init__(self, store: Store, name: str, retrain_id: str, job: str,
                 holder_running: Callable[[RetrainSlot], bool]):
        self.store, self.key = store, ModelKeys(name).retrain_slot
        self.retrain_id, self.job = retrain_id, job
        # Whether the slot's holder still runs: its training job has not ended, or it has
        # made none yet and its Job has not ended (asked of the API server).
        self.holder_running = holder_running
        self.mine = RetrainSlot(retrain_id, job, taken_at=utc_now())

    def take(self) -> RetrainSlot | None:
        """Take the slot (or keep it: a restart of this retrain). Returns the other retrain
        that holds it and still runs, or None once this one holds it."""
        for _ in range(ATTEMPTS):
            try:
                data, tag = self.store.get_tagged(self.key)
            except ObjectNotFound:
                data, tag = None, None
            held = self._parse(data)
            if held is not None and held.retrain_id == self.retrain_id and not held.released:
                self.mine = held  # a restart of this retrain's pod: it holds the slot
                return None
            if held is not None and not held.released and self.holder_running(held):
                return held
            try:
                self._write(self.mine, tag)
                return None
            except PreconditionFailed:
                continue  # another retrain moved it meanwhile: read again
        raise TrainstackError(f"{self.key}: not taken after {ATTEMPTS} attempts (retrains "
                              "of this model keep starting at once)")

    def note_training_job(self, training_job: str) -> None:
        self._update(dataclasses.replace(self.mine, training_job=training_job))

    def release(self) -> None:
        self._update(dataclasses.replace(self.mine, released=True))

    def _update(self, slot: RetrainSlot) -> None:
        """Rewrite the slot while this retrain holds it (never another's)."""
        for _ in range(ATTEMPTS):
            try:
                data, tag = self.store.get_tagged(self.key)
            except ObjectNotFound:
                data, tag = None, None
            held = self._parse(data)
            if held is None or held.retrain_id != self.retrain_id:
                log.warning("%s is held by retrain %s now, not this one (%s): left as it is",
                            self.key, held.retrain_id if held else "nobody", self.retrain_id)
                return
            try:
                self._write(slot, tag)
                self.mine = slot
                return
            except PreconditionFailed:
                continue
        raise TrainstackError(f"{self.key}: not updated after {ATTEMPTS} attempts")

    def _write(self, slot: RetrainSlot, tag: str | None) -> None:
        if tag is None:
            self.store.put_if_absent(self.key, slot.to_json())
        else:
            self.store.put_if_match(self.key, slot.to_json(), tag)

    def _parse(self, data: bytes | None) -> RetrainSlot | None:
        if data is None:
            return None
        try:
            return RetrainSlot.from_json(data)
        except MetaError as e:  # a damaged slot holds nobody: the next write replaces it
            log.warning("%s is unreadable (%s): taken over", self.key, e)
            return None


class Records:
    """This retrain's record, rewritten whole at every step (one writer: this pod)."""

    def __init__(self, store: Store, name: str, trigger: RetrainTrigger, job: str,
                 requested_at: str):
        self.store, self.key = store, ModelKeys(name).retrain(trigger.id)
        self.record = RetrainRecord(id=trigger.id, name=name, reason=trigger.reason,
                                    state=STARTING, requested_at=requested_at,
                                    updated_at=utc_now(), job=job, report=trigger.report)

    def ended(self) -> RetrainRecord | None:
        """This retrain's record when an earlier run of its pod saw it end (a restart after
        its training job ended: nothing is done again)."""
        try:
            found = RetrainRecord.from_json(self.store.get_bytes(self.key))
        except (ObjectNotFound, MetaError):
            return None
        return found if found.state in ENDED else None

    def write(self, state: str, message: str, **fields: str) -> None:
        self.record = dataclasses.replace(self.record, state=state, message=message,
                                          updated_at=utc_now(), **fields)
        try:
            self.store.put_bytes(self.key, self.record.to_json())
        except TrainstackError as e:  # for people to read: never worth stopping a retrain
            log.warning("retrain record %s not written: %s", self.key, e)
        log.info("retrain %s of %s: %s (%s)", self.record.id, self.record.name, state, message)


def retrain_records(store: Store, name: str) -> list[RetrainRecord]:
    """Every readable retrain record of ``name``, newest request first."""
    keys = ModelKeys(name)
    found = []
    for key in store.list(keys.retrains):
        if keys.retrain_of_key(key) is None:
            continue
        try:
            found.append(RetrainRecord.from_json(store.get_bytes(key)))
        except ObjectNotFound:
            continue
        except MetaError as e:
            log.warning("retrain record %s skipped: %s", key, e)
    return sorted(found, key=lambda r: (r.requested_at, r.id), reverse=True)
