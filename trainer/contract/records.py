"""The small records the trainer coordinates through in the store: ``latest.json``, a
version's ``claim.json``, the ``sequence.json`` counter and the run lease. Stdlib only."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from trainer.contract.validate import is_number, record_from_json, require


@dataclass(frozen=True)
class Latest:
    """``latest.json``: the version readers serve. Readers need only ``version``."""

    version: str
    sequence: int = 0
    """The publication sequence of this move: the version's meta.json sequence when its
    publication moved it, a new number when a person promoted it (``python -m trainer
    promote``: a rollback too). Only ever higher than the one it replaces (0 if written
    before sequences existed)."""
    promoted_by: str = ""
    """trainer.contract.lifecycle.promotion.PROMOTERS: 'gate' (the version passed the promotion
    gate), 'person' (promoted by hand), '' (gate off, and every latest.json written before the gate existed)."""
    version_sequence: int = 0
    """The version's own meta.json sequence when ``sequence`` is another (a promotion by
    hand); 0: the same as ``sequence``."""

    def __post_init__(self) -> None:
        require(isinstance(self.version, str) and bool(self.version) and "/" not in self.version,
                 "latest.json version", "a non-empty name without '/'", self.version)
        for name in ("sequence", "version_sequence"):
            require(type(getattr(self, name)) is int and getattr(self, name) >= 0,
                    f"latest.json {name}", "an integer >= 0", getattr(self, name))
        # A string, not one of PROMOTERS: an app reading a newer trainer's latest.json must
        # not stop serving over a word it does not know.
        require(isinstance(self.promoted_by, str), "latest.json promoted_by", "a string",
                self.promoted_by)

    @property
    def published_sequence(self) -> int:
        """The served version's place in publication order (its meta.json sequence)."""
        return self.version_sequence or self.sequence

    @classmethod
    def from_json(cls, data: bytes | str) -> Latest:
        return record_from_json(cls, data, "latest.json")

    def to_json(self) -> bytes:
        # Only the fields that say something: a gate-off latest.json is what it always was.
        values = {"version": self.version, "sequence": self.sequence}
        if self.promoted_by:
            values["promoted_by"] = self.promoted_by
        if self.version_sequence:
            values["version_sequence"] = self.version_sequence
        return json.dumps(values).encode()


@dataclass(frozen=True)
class VersionClaim:
    """``claim.json``: created exclusively before anything else in a version folder; the
    run that created it is the only one that writes there."""

    run_id: str
    writer: str
    """A random id of the claiming process: tells its own claim from another's after a
    retried request whose first attempt did succeed."""

    @classmethod
    def from_json(cls, data: bytes | str) -> VersionClaim:
        return record_from_json(cls, data, "claim.json")

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self)).encode()


@dataclass(frozen=True)
class SequenceCounter:
    """``sequence.json``: the last publication sequence number of a model name handed out."""

    last: int
    writer: str

    def __post_init__(self) -> None:
        require(type(self.last) is int and self.last >= 0, "sequence.json last",
                 "an integer >= 0", self.last)

    @classmethod
    def from_json(cls, data: bytes | str) -> SequenceCounter:
        return record_from_json(cls, data, "sequence.json")

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self)).encode()


@dataclass(frozen=True)
class RunLeaseRecord:
    """``models/<name>/leases/<run_id>.json``: which job trains (or publishes) the run.

    Taken and renewed by conditional writes only (trainer.store.lease). Expiry is judged by the
    waiting job's own monotonic clock (the record, hence its tag, unchanged for
    ``ttl_s``), never by comparing pods' wall clocks; ``renewals`` makes every renewal a
    new content, so a store whose tag is a content hash sees it change too."""

    run_id: str
    holder: str
    """A random id of the holding process."""
    place: str
    """Where it runs, for people: the pod's name in a cluster, else ``host:pid``. Two live
    jobs can share a pod's name (one replaced under the same name, two namespaces), so a
    successor never takes over because of it."""
    renewals: int
    ttl_s: float
    released: bool = False
    """Set by an orderly exit: the next job takes the lease at once."""
    since: str = ""
    """UTC, ISO 8601, by the holder's clock: for people reading it only."""
    process: str = ""
    """``<boot id>/<pid namespace>/<pid>/<start time>`` of the holding process (Linux; ""
    elsewhere and in older records): a successor that sees that pid namespace takes over
    at once once that process has exited (trainer.store.liveness)."""

    def __post_init__(self) -> None:
        for name in ("run_id", "holder", "place"):
            require(isinstance(getattr(self, name), str) and bool(getattr(self, name)),
                     f"run lease {name}", "a non-empty string", getattr(self, name))
        require(isinstance(self.process, str), "run lease process", "a string", self.process)
        require(type(self.renewals) is int and self.renewals >= 0, "run lease renewals",
                 "an integer >= 0", self.renewals)
        require(is_number(self.ttl_s) and self.ttl_s > 0, "run lease ttl_s", "a number > 0",
                 self.ttl_s)
        require(isinstance(self.released, bool), "run lease released", "true or false",
                 self.released)

    @classmethod
    def from_json(cls, data: bytes | str) -> RunLeaseRecord:
        return record_from_json(cls, data, "run lease")

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self)).encode()
