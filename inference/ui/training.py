"""The Training and Models tabs, the view of runs still training, and the retrains.

The served version's training (curves, confusion matrix, per-epoch metrics) comes from
its own files; runs that have not published yet come from their progress records
(inference.published.progress), so they show with or without MLflow; each version links to its
MLflow run when the trainer recorded one.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from inference.published.progress import ProgressBoard, literal, markdown_link
from inference.published.retrains import RetrainBoard
from inference.published.versions import ModelVersion
from trainer.contract.layout import model_name
from trainer.contract.lifecycle.promotion import BY_PERSON
from trainer.contract.records import Latest
from trainer.contract.reporting.progress import RunProgress
from trainer.contract.schema import EpochRecord, VersionMeta, VersionMetrics

EPOCH_COLUMNS = ["epoch", "train_loss", "train_acc", "test_loss", "test_acc", "seconds",
                 "img_per_s"]
VERSION_COLUMNS = ["version", "created", "test accuracy", "epochs", "run id", "promotion",
                   "MLflow", "serving"]
# Plain text except the link: store strings (a verdict's reason) are never read as Markdown.
VERSION_TYPES = ["str", "str", "str", "number", "str", "str", "markdown", "str"]
VERSION_WIDTHS = ["14%", "12%", "8%", "6%", "9%", "35%", "8%", "8%"]
RETRAIN_COLUMNS = ["started", "why", "how it ended", "run id", "version"]
RETRAIN_WIDTHS = ["15%", "17%", "44%", "9%", "15%"]
NO_RETRAINS = ("No retrain yet. The stack's retrain CronJob starts them (retrainSchedule, "
               "retrainOnDrift), or a person: `kubectl create job --from=cronjob/"
               "trainstack-retrain <name>`.")
STATES = {"training": "training", "publishing": "every epoch done, publishing",
          "interrupted": "**interrupted** (Ctrl-C): run the same training again (`make demo` "
                         "with the same knobs, or the same job) to resume from its last "
                         "checkpoint",
          "failed": "**failed**: its job stopped with an error (the job's logs say which); "
                    "the same job run again resumes from its last checkpoint"}


def pct(value: Any) -> str:
    return f"{100 * value:.1f}%" if isinstance(value, (int, float)) else "n/a"


def epoch_rows(metrics: VersionMetrics | None) -> list[list[Any]]:
    def fmt(value: Any) -> Any:
        return round(value, 4) if isinstance(value, float) else value

    epochs = metrics.epochs if metrics else []
    return [[fmt(getattr(e, c)) for c in EPOCH_COLUMNS] for e in epochs]


def run_summary(current: ModelVersion) -> str:
    """One line a person reads first: how good, how long, on how many workers."""
    summary = current.meta.metrics
    epochs = current.metrics.epochs if current.metrics else []
    parts = [f"**test accuracy** {pct(summary.test_acc)}", f"**epochs** {summary.epochs}",
             f"**training time** {summary.train_seconds:.0f} s"]
    if current.metrics:
        parts.append(f"**workers** {current.metrics.world_size}")
    if epochs:
        speed = sum(e.img_per_s for e in epochs) / len(epochs)
        parts.append(f"**throughput** {speed:,.0f} img/s")
    parts.append(f"**run** {literal(current.meta.run_id)}")
    return " · ".join(parts)


def run_details(current: ModelVersion) -> dict[str, Any]:
    meta = current.meta
    return {
        "model": meta.model, "dataset": meta.dataset, "version": current.version,
        "run_id": meta.run_id, "created_at": meta.created_at,
        "world_size": current.metrics.world_size if current.metrics else None,
        "summary": dataclasses.asdict(meta.metrics), "train_config": meta.train_config,
    }


def promotion_cell(meta: VersionMeta, latest: Latest | None) -> str:
    """The promotion gate's verdict on a version, and whether a person promoted it."""
    verdict = f"{meta.promotion.decision}: {meta.promotion.reason}" if meta.promotion else ""
    if latest is not None and latest.version == meta.version and latest.promoted_by == BY_PERSON:
        return "promoted by hand" + (f" (the gate said {verdict})" if verdict else "")
    return verdict


def version_rows(registry: Any, board: ProgressBoard,
                 current: ModelVersion | None) -> list[list[Any]]:
    if current is None:
        return []
    rows, latest = [], registry.latest
    for meta in registry.list_versions(current.name):
        link = board.mlflow_link(current.name, meta.run_id)
        rows.append([meta.version, meta.created_at, pct(meta.metrics.test_acc),
                     meta.metrics.epochs, meta.run_id, promotion_cell(meta, latest),
                     markdown_link("MLflow run", link) if link else "",
                     "●" if meta.version == current.version else ""])
    return rows


def make_refresh_retrains(retrains: RetrainBoard, table: Any, note: Any,
                          shown_state: Any) -> Callable[[str], Any]:
    """Redraw the Training tab's list of retrains when one changed."""

    def refresh(shown: str) -> Any:
        rows = [row.cells() for row in retrains.rows()]
        key = json.dumps(rows)
        if key == shown:
            return gr.skip()
        return {shown_state: key,
                table: gr.Dataframe(value=rows, headers=RETRAIN_COLUMNS, visible=bool(rows)),
                note: gr.Markdown(visible=not rows)}

    return refresh


@dataclass
class ProgressPanel:
    """One view of the runs still training (the Training tab and the "no model" page)."""

    column: Any
    summary: Any
    loss: Any
    accuracy: Any

    @property
    def outputs(self) -> list[Any]:
        return [self.column, self.summary, self.loss, self.accuracy]


def progress_panel(elem_id: str) -> ProgressPanel:
    with gr.Column(visible=False, elem_id=elem_id) as column:
        gr.Markdown("### Runs not published yet")
        summary = gr.Markdown(elem_classes=["run-progress"])
        with gr.Row():
            # gr.Plot of a matplotlib figure: a legend, whole-epoch ticks and a marker per
            # epoch (a line plot of one epoch would draw nothing). Titled in the figure: a
            # floating label would cover its corner.
            loss = gr.Plot(label="Loss so far", show_label=False,
                           elem_classes=["curves-so-far"])
            accuracy = gr.Plot(label="Accuracy so far", show_label=False,
                               elem_classes=["curves-so-far"])
    return ProgressPanel(column, summary, loss, accuracy)


def run_line(run: RunProgress, board: ProgressBoard) -> str:
    """``Run abc of smallcnn-digits: epoch 3 of 12 · 2 workers · training · ...``"""
    link = board.link_of(run)
    name = model_name(run.model, run.dataset)
    # Every string of the record is shown literally: see progress.literal.
    title = f"**Run** {literal(run.run_id)} of {literal(name)}"
    parts = [f"{title}: **epoch {run.epoch} of {run.epochs}**", f"{run.world_size} worker(s)",
             STATES.get(run.state, run.state), f"started {literal(run.started_at)}",
             f"last report {literal(run.updated_at)}"]
    if run.history:
        parts.append(f"test accuracy {pct(run.history[-1].test_acc)}")
    if link:
        parts.append(markdown_link("MLflow run", link))
    return " · ".join(parts)


def curves(history: list[EpochRecord], kind: str) -> Figure:
    """``kind`` ("loss" or "acc") of the train and test splits per epoch so far."""
    figure = Figure(figsize=(5.5, 3.2), dpi=100, layout="constrained")
    axes = figure.subplots()
    epochs = [e.epoch for e in history]
    for split in ("train", "test"):
        axes.plot(epochs, [getattr(e, f"{split}_{kind}") for e in history], marker="o",
                  label=split)
    what = "accuracy" if kind == "acc" else "loss"
    axes.set(title=f"{what.capitalize()} so far", xlabel="epoch",
             ylabel="accuracy" if kind == "acc" else "cross-entropy loss")
    if kind == "acc":
        axes.set_ylim(0, 1)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(epochs) == 1:  # a lone point in the middle of a sensible axis
        axes.set_xlim(epochs[0] - 1, epochs[0] + 1)
    axes.grid(alpha=0.3)
    axes.legend(loc="best")
    return figure


def make_refresh_progress(board: ProgressBoard, panels: list[ProgressPanel],
                          shown_state: Any) -> Callable[[str], Any]:
    """Redraw the panels when a run reported something new (else skip: no flicker).
    ``shown_state``: the gr.State holding what this browser tab shows."""

    def refresh(shown: str) -> Any:
        runs = board.running()
        key = json.dumps([[r.run_id, r.epoch, r.state, r.updated_at, board.link_of(r)]
                          for r in runs])
        if key == shown:
            return gr.skip()
        updates: dict[Any, Any] = {shown_state: key}
        newest = runs[0] if runs else None
        for panel in panels:
            updates[panel.column] = gr.Column(visible=newest is not None)
            updates[panel.summary] = "\n\n".join(run_line(r, board) for r in runs)
            updates[panel.loss] = curves(newest.history if newest else [], "loss")
            updates[panel.accuracy] = curves(newest.history if newest else [], "acc")
        return updates

    return refresh


def training_tab(ui: Any) -> None:
    with gr.Tab("Training", id="training"):
        ui.progress_panels.append(progress_panel("progress-training"))
        gr.Markdown("### The served version")
        ui.summary = gr.Markdown(elem_id="run-summary")
        with gr.Row():
            # Headings above the plots: a floating image label hides their titles.
            with gr.Column():
                gr.Markdown("**Loss and accuracy per epoch**")
                ui.curves = gr.Image(show_label=False, interactive=False, elem_id="curves")
            with gr.Column():
                gr.Markdown("**Confusion matrix (test set)**")
                ui.confusion = gr.Image(show_label=False, interactive=False,
                                        elem_id="confusion")
        ui.epochs = gr.Dataframe(headers=EPOCH_COLUMNS, label="Per-epoch metrics",
                                 interactive=False)
        with gr.Accordion("Run configuration", open=False):
            ui.details = gr.JSON(label="meta.json: train config and summary")
        gr.Markdown("### Retrains")
        ui.no_retrains = gr.Markdown(NO_RETRAINS, elem_id="no-retrains")
        ui.retrains = gr.Dataframe(headers=RETRAIN_COLUMNS, interactive=False, visible=False,
                                   column_widths=RETRAIN_WIDTHS, wrap=True, elem_id="retrains", label="Newest first: why each started "
                                   "(schedule, drift, person) and how it ended")


def models_tab(ui: Any) -> None:
    with gr.Tab("Models", id="models"):
        ui.versions = gr.Dataframe(headers=VERSION_COLUMNS, datatype=VERSION_TYPES,
                                   interactive=False, elem_id="versions", wrap=True,
                                   column_widths=VERSION_WIDTHS,
                                   label="Published versions (last published first). A "
                                         "candidate the promotion gate refused is served "
                                         "only once a person promotes it: python -m trainer "
                                         "promote --model NAME --version VERSION")
        ui.reload_versions = gr.Button("Refresh list", size="sm")
