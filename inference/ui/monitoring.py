"""The Monitoring tab: how the served version is doing on what it is asked, without labels.

For the served version: the last check's verdict (green, red, or why there is none), its
estimated accuracy per check beside the test accuracy, the predicted classes and the
calibrated confidences of the last check against the reference, and every check with the
tests that fired (inference.monitoring: this replica's checks, newest first).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from inference.monitoring.drift import MIN_PREDICTIONS
from inference.published.progress import literal
from trainer.contract.lifecycle.monitoring import CONFIDENCE, DriftReport, Reference

CHECK_COLUMNS = ["checked (UTC)", "predictions", "verdict", "estimated accuracy", "fired"]
GREEN, RED, GREY = "#15803d", "#b91c1c", "#475569"


@dataclass
class MonitoringPanel:
    shown: Any
    verdict: Any
    accuracy: Any
    classes: Any
    confidence: Any
    checks: Any

    @property
    def outputs(self) -> list[Any]:
        return [self.shown, self.verdict, self.accuracy, self.classes, self.confidence,
                self.checks]


def monitoring_tab() -> MonitoringPanel:
    with gr.Tab("Monitoring", id="monitoring"):
        verdict = gr.HTML(elem_id="drift-verdict")
        with gr.Row():
            accuracy = gr.Plot(show_label=False, elem_id="estimated-accuracy")
            classes = gr.Plot(show_label=False, elem_id="class-distribution")
            confidence = gr.Plot(show_label=False, elem_id="confidence-histogram")
        checks = gr.Dataframe(headers=CHECK_COLUMNS, interactive=False, elem_id="drift-checks",
                              label="Drift checks (newest first)")
    return MonitoringPanel(gr.State("?"), verdict, accuracy, classes, confidence, checks)


def banner(colour: str, text: str) -> str:
    bold = text.replace("<b>", '<b style="color:inherit">')  # Gradio darkens <b>
    return (f'<div class="drift-verdict" style="padding:0.7em 1em;border-radius:12px;'
            f'color:white;background:{colour}" data-state="{colour}">{bold}</div>')


def verdict_html(reference: Reference | None, reports: list[DriftReport], version: str) -> str:
    if reference is None:
        return banner(GREY, f"Version {literal(version)} has no monitoring reference (it "
                            "was published before monitoring existed): it is served, not "
                            "checked. The next version will have one.")
    if not reports:
        return banner(GREY, f"No check yet: one runs every window of predictions (at least "
                            f"{MIN_PREDICTIONS}).")
    last = reports[-1]
    in_a_row = next((i for i, r in enumerate(reversed(reports)) if not r.drift), len(reports))
    if last.drift:
        return banner(RED, f"<b>Drift</b> in the last {in_a_row} check(s): "
                           f"{', '.join(last.fired)} differ from the test split. Estimated "
                           f"accuracy {last.estimated_accuracy:.1%} (test "
                           f"{last.test_accuracy:.1%}).")
    return banner(GREEN, f"<b>No drift</b> in the last check ({last.n} predictions): "
                         f"estimated accuracy {last.estimated_accuracy:.1%} (test "
                         f"{last.test_accuracy:.1%}).")


def _figure(title: str) -> tuple[Figure, Any]:
    figure = Figure(figsize=(4.6, 3.0), dpi=100, layout="constrained")
    axes = figure.subplots()
    axes.set_title(title)
    axes.grid(alpha=0.3)
    return figure, axes


def accuracy_figure(reports: list[DriftReport], test_accuracy: float | None) -> Figure:
    figure, axes = _figure("Estimated accuracy per check")
    checks = np.arange(1, len(reports) + 1)
    axes.plot(checks, [r.estimated_accuracy for r in reports], marker="o",
              label="estimated (no labels)")
    for i, r in zip(checks, reports):
        if r.drift:
            axes.plot([i], [r.estimated_accuracy], "o", color=RED)
    if test_accuracy is not None:
        axes.axhline(test_accuracy, color=GREY, linestyle="--", label="test accuracy")
    axes.set(xlabel="check", ylabel="accuracy", ylim=(0, 1.02))
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.legend(loc="lower left")
    return figure


def classes_figure(reference: Reference | None, last: DriftReport | None) -> Figure:
    figure, axes = _figure("Predicted classes: now vs reference")
    if reference is not None:
        x = np.arange(len(reference.classes))
        ref = np.asarray(reference.class_counts, float)
        axes.bar(x - 0.2, ref / max(ref.sum(), 1), 0.4, label="reference")
        if last is not None and len(last.class_counts) == len(x):
            now = np.asarray(last.class_counts, float)
            axes.bar(x + 0.2, now / max(now.sum(), 1), 0.4, label="last check")
        axes.set_xticks(x, reference.classes, rotation=45, ha="right", fontsize=8)
        axes.legend(loc="upper right")
    axes.set(ylabel="share")
    return figure


def confidence_figure(reference: Reference | None, last: DriftReport | None) -> Figure:
    figure, axes = _figure("Calibrated confidence: now vs reference")
    edges = np.linspace(0, 1, 11)
    if reference is not None and reference.samples.get(CONFIDENCE):
        counts = np.histogram(reference.samples[CONFIDENCE], bins=edges)[0]
        axes.stairs(counts / max(counts.sum(), 1), edges, label="reference", fill=True,
                    alpha=0.4)
    if last is not None and last.confidence_histogram:
        counts = np.asarray(last.confidence_histogram, float)
        axes.stairs(counts / max(counts.sum(), 1), edges, label="last check", linewidth=2)
    axes.set(xlabel="confidence", ylabel="share")
    if axes.get_legend_handles_labels()[0]:  # nothing drawn yet: no empty legend (a warning)
        axes.legend(loc="upper left")
    return figure


def check_rows(reports: list[DriftReport]) -> list[list[Any]]:
    return [[r.checked_at, r.n, "drift" if r.drift else "no drift",
             f"{r.estimated_accuracy:.1%}", ", ".join(r.fired) or "-"]
            for r in reversed(reports)]


def make_refresh_monitoring(monitor: Any, registry: Any,
                            panel: MonitoringPanel) -> Callable[[str], Any]:
    """Redraw when the served version or its checks changed (else skip: no flicker)."""

    def refresh(shown: str) -> Any:
        current = registry.current
        if current is None or monitor is None:
            return gr.skip() if shown == "" else {
                panel.shown: "", panel.verdict: banner(GREY, "Monitoring is off." if monitor
                                                       is None else "No model served yet.")}
        reports = monitor.reports(current.name, current.version)
        key = f"{current.version}:{len(reports)}:{reports[-1].checked_at if reports else ''}"
        if key == shown:
            return gr.skip()
        reference = monitor.recorder.reference(current)
        last = reports[-1] if reports else None
        return {panel.shown: key,
                panel.verdict: verdict_html(reference, reports, current.version),
                panel.accuracy: accuracy_figure(reports, reference.test_accuracy
                                                if reference else None),
                panel.classes: classes_figure(reference, last),
                panel.confidence: confidence_figure(reference, last),
                panel.checks: check_rows(reports)}

    return refresh
