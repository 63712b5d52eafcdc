"""Issue 13, app side, without a server: progress records and MLflow links."""

from __future__ import annotations

import logging

from inference.published.progress import ProgressBoard, markdown_link
from inference.published.registry import Registry
from inference.ui.training import VERSION_COLUMNS, curves, version_rows
from tests.inference.modelkit import MODEL_NAME, publish_version, write_progress
from trainer.contract.layout import ModelKeys
from trainer.store import LocalStore

EXPERIMENT, MLFLOW_RUN = "3", "0123abcd4567ef"


class CountingStore(LocalStore):
    gets = lists = 0

    def get_bytes(self, key):
        self.gets += 1
        return super().get_bytes(key)

    def list(self, prefix):
        self.lists += 1
        return super().list(prefix)


def test_a_first_run_is_found_and_shown_before_anything_is_published(tmp_path):
    store = CountingStore(tmp_path / "store")
    write_progress(store, "run1", epoch=2, epochs=5)
    registry = Registry(store, tmp_path / "cache")
    assert not registry.check_once() and registry.nothing_published
    assert registry.progress_names == {MODEL_NAME}
    board = ProgressBoard(registry, refresh_seconds=3600)
    (run,) = board.running()
    assert (run.run_id, run.epoch, run.epochs, len(run.history)) == ("run1", 2, 5, 2)
    # Many browser tabs refreshing: the store is read once per refresh period.
    reads = store.gets + store.lists
    write_progress(store, "run1", epoch=3, epochs=5)
    assert board.running()[0].epoch == 2
    assert store.gets + store.lists == reads
    board.refresh_seconds = 0
    assert board.running()[0].epoch == 3


def test_published_runs_leave_the_view_and_the_newest_report_comes_first(tmp_path):
    store = LocalStore(tmp_path / "store")
    version = publish_version(store, "20261123T150000Z-done", run_id="done")
    write_progress(store, "done", epoch=5, state="published", version=version)
    write_progress(store, "older", epoch=1)
    write_progress(store, "newer", epoch=4)
    registry = Registry(store, tmp_path / "cache", model_name=MODEL_NAME)
    board = ProgressBoard(registry, refresh_seconds=0)
    assert [r.run_id for r in board.running()] == ["newer", "older"]
    write_progress(store, "newer", epoch=5, state="published", version="v")
    assert [r.run_id for r in board.running()] == ["older"]


def test_each_version_links_to_its_mlflow_run_on_the_users_address(tmp_path):
    store = LocalStore(tmp_path / "store")
    tracked = publish_version(store, "20261123T150000Z-tracked", run_id="tracked")
    write_progress(store, "tracked", epoch=5, state="published", version=tracked,
                   mlflow=(EXPERIMENT, MLFLOW_RUN))
    untracked = publish_version(store, "20261123T160000Z-plain", run_id="plain")
    write_progress(store, "plain", epoch=5, state="published", version=untracked)
    registry = Registry(store, tmp_path / "cache")
    registry.check_once()
    page = f"#/experiments/{EXPERIMENT}/runs/{MLFLOW_RUN}"
    # Without --mlflow-ui-url: the address the trainer logged to.
    as_trainer = ProgressBoard(registry)
    assert as_trainer.mlflow_link(MODEL_NAME, "tracked") == \
        f"http://mlflow.trainstack.svc:5000/{page}"
    assert as_trainer.mlflow_link(MODEL_NAME, "plain") is None
    assert as_trainer.mlflow_link(MODEL_NAME, "no-record") is None
    board = ProgressBoard(registry, mlflow_ui_url="https://mlflow.example.org/")
    rows = {row[0]: row for row in version_rows(registry, board, registry.current)}
    link = VERSION_COLUMNS.index("MLflow")
    assert rows[tracked][link] == f"[MLflow run](https://mlflow.example.org/{page})"
    assert rows[untracked][link] == ""
    assert rows[untracked][VERSION_COLUMNS.index("serving")] == "●"


def test_a_stored_link_cannot_break_out_of_its_markdown():
    link = markdown_link("MLflow run", "http://h/#/x) [click](javascript:alert(1)")
    assert link.count("(") == 1 and link.count(")") == 1 and " " not in link[13:]


def test_an_unreadable_record_is_skipped_and_warned_about_once(tmp_path, caplog):
    store = LocalStore(tmp_path / "store")
    write_progress(store, "good", epoch=1)
    store.put_bytes(ModelKeys(MODEL_NAME).progress("bad"), b'{"run_id": "bad"')
    registry = Registry(store, tmp_path / "cache", model_name=MODEL_NAME)
    board = ProgressBoard(registry, refresh_seconds=0)
    with caplog.at_level(logging.WARNING, logger="inference.published.progress"):
        for _ in range(3):
            assert [r.run_id for r in board.running()] == ["good"]
    assert len([r for r in caplog.records if "progress/bad.json" in r.getMessage()]) == 1


def test_curves_so_far_have_a_legend_whole_epochs_and_show_a_single_epoch(tmp_path):
    """Issue 24: train and test told apart, no fractional epochs, one epoch not empty."""
    store = LocalStore(tmp_path / "store")
    for epochs_done in (1, 3):
        record = write_progress(store, "r", epoch=epochs_done)
        for kind in ("loss", "acc"):
            axes = curves(record.history, kind).axes[0]
            assert [t.get_text() for t in axes.get_legend().get_texts()] == ["train", "test"]
            train, test = axes.get_lines()
            assert list(test.get_ydata()) == [getattr(e, f"test_{kind}")
                                              for e in record.history]
            assert len(train.get_xdata()) == epochs_done and train.get_marker() == "o"
            lo, hi = axes.get_xlim()
            ticks = [t for t in axes.get_xticks() if lo <= t <= hi]
            assert ticks and all(float(t).is_integer() for t in ticks), ticks
            assert all(lo < e < hi for e in train.get_xdata())  # a lone point is visible


def test_an_interrupted_run_says_so_and_how_to_resume(tmp_path):
    from inference.ui.training import run_line

    store = LocalStore(tmp_path / "store")
    record = write_progress(store, "stopped", epoch=2, state="interrupted")
    registry = Registry(store, tmp_path / "cache")
    registry.check_once()  # discovers the progress record's model
    board = ProgressBoard(registry, refresh_seconds=0)
    assert [r.state for r in board.running()] == ["interrupted"]
    line = run_line(record, board)
    assert "**interrupted**" in line and "resume" in line and "training ·" not in line


def test_text_of_a_hostile_progress_record_is_shown_as_text(tmp_path):
    """Anyone who can write to the store writes progress records: their strings are shown
    to every visitor, so none may become a link, an image or HTML on the page."""
    from markdown_it import MarkdownIt

    from inference.ui.training import run_line
    from trainer.contract.reporting.progress import RunProgress

    phish = "[Session expired: sign in again](https://evil.example/login)"
    record = RunProgress(
        run_id="r` " + phish + " `", model="smallcnn<img src=x onerror=alert(1)>",
        dataset="digits`<script>alert(2)</script>", state="training", epoch=0, epochs=3,
        world_size=1, started_at="2026-11-23T15:00:00Z\n\n" + phish,
        updated_at='<a href="https://evil.example">now</a>')
    board = ProgressBoard(Registry(LocalStore(tmp_path / "store"), tmp_path / "cache"))
    html = MarkdownIt("commonmark").render(run_line(record, board))
    for tag in ("<a ", "<img", "<script", "<p>\n<p>"):
        assert tag not in html, html
    assert html.count("<p>") == 1, html  # one line: no paragraph break injected
