"""The configuration reference is generated from the code and committed: the two agree."""

from __future__ import annotations

from dataclasses import fields

from infra.config import reference
from infra.config.keys import FIELDS, SECRET_KEYS, StackSecrets
from infra.config.stack_config import StackConfig


def test_the_committed_reference_is_what_the_code_generates():
    assert reference.PAGE.read_text() == reference.render(), (
        "docs/reference/configuration.md is stale: run python -m infra.config.reference")


def test_every_key_is_documented_with_what_it_allows():
    page = reference.render()
    for key in (*FIELDS, *SECRET_KEYS):
        assert f"| `{key}` |" in page, key
    for f in (*fields(StackConfig), *fields(StackSecrets)):
        if "key" in f.metadata:
            assert f.metadata["doc"].strip(), f.name
            assert (f.metadata.get("allowed") or f.metadata["parser"].allowed).strip(), f.name


def test_check_mode_fails_on_a_stale_page(tmp_path, monkeypatch):
    monkeypatch.setattr(reference, "PAGE", tmp_path / "configuration.md")
    assert reference.main(["--check"]) == 1
    assert reference.main([]) == 0
    assert reference.main(["--check"]) == 0
    (tmp_path / "configuration.md").write_text(reference.render().replace("`2`", "`3`", 1))
    assert reference.main(["--check"]) == 1
