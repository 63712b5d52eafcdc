"""docs/operations.md's "What the stack requests" tables are what the stack renders."""

from __future__ import annotations

from tests.infra import cost_table


def test_the_cost_tables_in_the_docs_match_the_renderings():
    text = cost_table.DOCS.read_text()
    assert cost_table.rewrite(text) == text, (
        "docs/operations.md's cost tables are stale: run .venv/bin/python -m tests.infra.cost_table")


def test_the_tables_follow_the_config():
    gpu = "\n".join(cost_table.training_table())
    assert "| 4 | 8 CPU, 32Gi, 1 GPU, 6Gi | 32 CPU, 128Gi, 4 GPU |" in gpu
    assert "| **total** | 1 / 4 | 2.25Gi / 4.5Gi |" in "\n".join(cost_table.rest_table())
