"""Issue 24: an app serving one model name (`--model-name`, as `make demo` runs it) says
that model has nothing yet, and which models the store does have."""

from __future__ import annotations

from inference.published.registry import Registry
from inference.ui.blocks import no_model_markdown
from tests.inference.modelkit import MODEL_NAME, publish_version
from trainer.store import LocalStore


def test_a_named_model_with_nothing_published_names_itself_and_the_models_there(tmp_path):
    store = LocalStore(tmp_path / "store")
    publish_version(store, "20261123T150000Z-other")
    registry = Registry(store, tmp_path / "cache", model_name="smallcnn-digits")
    assert not registry.check_once()
    text = no_model_markdown(registry)
    assert "No model published yet as ` smallcnn-digits `" in text
    assert f"Models published here: ` {MODEL_NAME} `" in text
    assert "Nothing has been trained into this store" not in text


def test_an_empty_store_says_nothing_was_published_at_all(tmp_path):
    store = LocalStore(tmp_path / "store")
    store.ensure_buckets()
    named = Registry(store, tmp_path / "cache", model_name="smallcnn-digits")
    assert "Nothing has been published into this store at all" in no_model_markdown(named)
    newest = Registry(store, tmp_path / "cache")
    assert "Nothing has been trained into this store so far" in no_model_markdown(newest)
