"""Issue 20 #8 and #9: the model cache and the fallback follow publication, not names.

#8: the cache keeps the served version and the one served just before it (a page may still
show its files), whatever the publishing pods' clocks wrote into the version names.
#9: the alias ``current`` (MLflow) and ``latest.json`` name the newest published version;
the app serves it unless it cannot, and then says which it serves instead and why.
"""

from __future__ import annotations

from inference.published.registry import Registry
from tests.inference.modelkit import MODEL_NAME, publish_version
from trainer.contract.layout import MODEL_FILE

# Published in this order; the pods' clocks disagree, so the names sort otherwise.
FIRST, SECOND, THIRD = "20261125T000000Z", "20261123T000000Z", "20261124T000000Z"


def cached(registry: Registry) -> set[str]:
    return {p.name for p in (registry.cache_dir / MODEL_NAME).iterdir()
            if p.is_dir() and not p.name.startswith(".")}


def test_the_cache_keeps_the_version_served_before_whatever_its_name(local_store, tmp_path):
    registry = Registry(local_store, tmp_path / "cache")
    for version in (FIRST, SECOND, THIRD):
        publish_version(local_store, version)
        assert registry.check_once()
        assert registry.current.version == version
    assert cached(registry) == {THIRD, SECOND}
    assert registry.current.directory.is_dir()


def test_a_restart_keeps_the_version_published_before_the_served_one(local_store, tmp_path):
    """A given cache dir outlives the process: a new registry keeps, besides what it
    serves, the version published just before it (by sequence), not the latest name."""
    first = Registry(local_store, tmp_path / "cache")
    for version in (FIRST, SECOND):
        publish_version(local_store, version)
        first.check_once()
    publish_version(local_store, THIRD)
    restarted = Registry(local_store, tmp_path / "cache")
    assert restarted.check_once() and restarted.current.version == THIRD
    assert cached(restarted) == {THIRD, SECOND}


def test_a_refused_latest_is_reported_with_what_is_served_instead(local_store, tmp_path):
    registry = Registry(local_store, tmp_path / "cache")
    publish_version(local_store, FIRST)
    assert registry.check_once()
    assert registry.refused_latest is None
    publish_version(local_store, SECOND, model_bytes=b"not a program")
    registry.check_once()
    assert registry.current.version == FIRST
    refused = registry.refused_latest
    assert refused is not None and refused.version == SECOND
    assert MODEL_FILE in refused.reason and refused.serving == FIRST
    publish_version(local_store, THIRD)
    assert registry.check_once() and registry.current.version == THIRD
    assert registry.refused_latest is None


def test_a_broken_latest_never_falls_back_to_a_refused_candidate(local_store, tmp_path):
    """A refused candidate, published between two served versions, is not what the app
    falls back to when the newest breaks: the version it was refused against is."""
    from trainer.contract.lifecycle.promotion import CANDIDATE, PROMOTED, Promotion

    def verdict(decision: str, against: str) -> Promotion:
        return Promotion(decision, "a test's verdict", against=against, candidate_acc=0.5,
                         current_acc=0.9, split="sha256:test")

    publish_version(local_store, FIRST, promotion=verdict(PROMOTED, ""))
    publish_version(local_store, SECOND, promotion=verdict(CANDIDATE, FIRST))
    publish_version(local_store, THIRD, promotion=verdict(PROMOTED, FIRST),
                    model_bytes=b"not a program")
    registry = Registry(local_store, tmp_path / "cache")
    registry.check_once()
    assert registry.refused_latest.version == THIRD
    assert registry.current.version == FIRST, "the refused candidate must not be served"
