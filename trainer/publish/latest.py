"""``latest.json`` and the sequence counter: conditional writes only, and forward only.

Every version's publication takes the next number of its model name from
``models/<name>/sequence.json``; latest.json moves to a version only with a number higher
than the one it names, so a delayed or repeated write never moves it back, whatever the
pods' clocks say. With the promotion gate (trainer.publish.gate) a move also names the
version the gate compared with: latest.json moves only while it still names that one, so
a version is never served over one it was not compared with. A person's promotion
(``python -m trainer promote``, a rollback too) takes a new number and may point
latest.json at any complete version (trainer.promote). Conditional writes that
lose a race read again and retry.
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid

from trainer.contract.errors import MetaError, ObjectNotFound, PreconditionFailed, StoreError
from trainer.contract.layout import ModelKeys
from trainer.contract.records import Latest, SequenceCounter
from trainer.store import Store

log = logging.getLogger(__name__)

# Conditional writes retried after losing a race (with jittered backoff): only many
# publications of one name at once would exhaust them.
WRITE_ATTEMPTS = 50
# move_latest's `over` when any current version will do (no gate).
ANY = None


def backoff(attempt: int) -> None:
    time.sleep(min(1.0, 0.01 * 2 ** attempt) * (0.5 + random.random()))


def holds(store: Store, key: str, data: bytes) -> bool:
    """Whether ``key`` holds ``data``: our own write, when a retried request whose first
    attempt did succeed comes back as "precondition failed"."""
    try:
        return store.get_bytes(key) == data
    except ObjectNotFound:
        return False


def read_latest(store: Store, name: str) -> tuple[Latest | None, str | None]:
    """latest.json and its tag; (None, None) if absent, (None, tag) if unreadable."""
    try:
        data, tag = store.get_tagged(ModelKeys(name).latest)
    except ObjectNotFound:
        return None, None
    try:
        return Latest.from_json(data), tag
    except MetaError as e:
        log.warning("models/%s/latest.json is unreadable (%s): the next version replaces it",
                    name, e)
        return None, tag


def latest_version(store: Store, name: str) -> str | None:
    latest, _ = read_latest(store, name)
    return latest.version if latest else None


def allocate_sequence(store: Store, name: str) -> int:
    """The next publication sequence of ``name``: higher than any handed out before and than
    latest.json's (a lost or reset counter cannot hand out a number twice)."""
    key = ModelKeys(name).sequence
    for attempt in range(WRITE_ATTEMPTS):
        try:
            data, tag = store.get_tagged(key)
        except ObjectNotFound:
            data, tag = None, None
        try:
            last = SequenceCounter.from_json(data).last if data is not None else 0
        except MetaError:
            last = 0
        latest, _ = read_latest(store, name)
        number = max(last, latest.sequence if latest else 0) + 1
        mine = SequenceCounter(last=number, writer=uuid.uuid4().hex).to_json()
        try:
            if tag is None:
                store.put_if_absent(key, mine)
            else:
                store.put_if_match(key, mine, tag)
            return number
        except PreconditionFailed:
            if holds(store, key, mine):
                return number
        backoff(attempt)
    raise StoreError(f"{key}: no sequence number after {WRITE_ATTEMPTS} attempts "
                     "(too many publications at once)")


def move_latest(store: Store, name: str, target: Latest, over: str | None = ANY
                ) -> tuple[bool, Latest | None]:
    """Point latest.json at ``target`` unless it names ``target.version`` already or one of
    the same or a higher sequence, or (``over`` given: the gate's comparison) a version
    other than ``over`` ('' = none at all). Returns (whether it moved, what it named before)."""
    key = ModelKeys(name).latest
    mine = target.to_json()
    for attempt in range(WRITE_ATTEMPTS):
        current, tag = read_latest(store, name)
        if current is not None and (current.version == target.version
                                    or current.sequence >= target.sequence):
            return False, current
        if over is not ANY and (current.version if current else "") != over:
            return False, current
        try:
            if tag is None:
                store.put_if_absent(key, mine)
            else:
                store.put_if_match(key, mine, tag)
            return True, current
        except PreconditionFailed:
            if holds(store, key, mine):
                return True, current
        backoff(attempt)
    raise StoreError(f"{key}: not moved after {WRITE_ATTEMPTS} attempts "
                     "(too many publications at once)")


def log_move(name: str, version: str, sequence: int, moved: bool, before: Latest | None,
             **why: str) -> None:
    """The structured ``latest`` line: whether latest.json moved and what it names now."""
    now = (version, sequence) if moved else (before.version, before.sequence) if before \
        else (None, None)
    log.info(json.dumps({"event": "latest", "model": name, "version": version,
                         "sequence": sequence, "moved": moved, "latest": now[0],
                         "latest_sequence": now[1], **why}))
