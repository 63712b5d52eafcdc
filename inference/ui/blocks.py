"""The Gradio UI: Predict, Training, Models and Monitoring tabs, and a friendly page before
any model.

Each browser tab remembers which version it shows (a gr.State); a gr.Timer compares it
with the served one and redraws everything when the model was hot-swapped.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

from inference.published.progress import ProgressBoard, literal
from inference.published.registry import ModelVersion, Registry
from inference.published.retrains import RetrainBoard
from inference.serving.engine import Engine
from inference.serving.metrics import Metrics
from inference.serving.predict import BadImage
from inference.ui.monitoring import MonitoringPanel, make_refresh_monitoring, monitoring_tab
from inference.ui.training import (
    epoch_rows,
    make_refresh_progress,
    make_refresh_retrains,
    models_tab,
    pct,
    progress_panel,
    run_details,
    run_summary,
    training_tab,
    version_rows,
)

REFRESH_SECONDS = 3
# System fonts only: the app must render on clusters without internet access.
THEME = gr.themes.Soft(
    primary_hue="indigo", secondary_hue="sky", neutral_hue="slate",
    font=["Inter", "ui-sans-serif", "system-ui", "Segoe UI", "Roboto", "sans-serif"],
    font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "monospace"],
)
CSS = """
#header h1 { margin-bottom: 0.2em; }
#model-status { padding: 0.6em 1em; border-radius: 12px;
  background: var(--color-accent-soft); }
#no-model { text-align: center; padding: 3em 1em; }
#no-model h2 { font-size: 1.8em; }
#run-summary { padding: 0.4em 0; }
/* CIFAR-sized uploads (32x32) would show as a speck: scale them up, keeping pixels crisp. */
#input-image img { min-width: 60%; min-height: 60%; object-fit: contain;
  image-rendering: pixelated; }
/* Gradio floats an image's download/fullscreen/share buttons over its top corner, where
   the published figures have their titles and legends: a row of their own above it. */
#curves .icon-button-wrapper, #confusion .icon-button-wrapper { position: static !important;
  margin-left: auto; width: fit-content; box-shadow: none; }
"""

HEADER = """# trainstack image classifier
Upload, drop or paste an image and the newest model trained by the cluster tells you
what it sees. New models appear here by themselves as soon as training publishes them."""

NO_MODEL = """## No model published yet
Nothing has been trained into this store so far. Start a training run:

`make demo` on this machine, or `pulumi up` on a Kubernetes cluster.

This page refreshes itself and switches to the classifier as soon as the first model
is published. No need to reload."""

NO_MODEL_NAMED = """## No model published yet as {name}
This app serves {name} only (`--model-name`), and nothing has been published under that
name in this store so far. {others}

This page refreshes itself and switches to the classifier as soon as {name} is
published. No need to reload."""


def no_model_markdown(registry: Registry) -> str:
    """The empty page: with ``--model-name``, that name has nothing, and which models do."""
    if not registry.model_name:
        return NO_MODEL
    others = sorted(registry.known_names() - {registry.model_name})
    listed = (f"Models published here: {', '.join(literal(n) for n in others)}; serve one "
              "with `--model-name` (or leave it out for the newest)." if others
              else "Nothing has been published into this store at all yet.")
    return NO_MODEL_NAMED.format(name=literal(registry.model_name), others=listed)


def status_markdown(current: ModelVersion | None) -> str:
    if current is None:
        # Not the store's address: the page is open without a token (issue 20 #5).
        return "No model loaded yet."
    return (f"**Model** {literal(current.name)} · **version** {literal(current.version)} · "
            f"**test accuracy** {pct(current.test_acc)} · "
            f"{len(current.meta.classes)} classes")


def untracked_upload(path: str, demo: gr.Blocks) -> bool:
    """Whether ``path`` is a file Gradio wrote into its upload folder for one call and
    tracks nowhere: an API call's image sent as a data: URL. No age sweep, no size cap, not
    even the shutdown deletes it (each such call left a file for good)."""
    from gradio.utils import get_upload_folder

    folder = Path(get_upload_folder()).resolve()
    return (Path(path).resolve().is_relative_to(folder)
            and not any(path in files for files in demo.temp_file_sets))


def make_classify(registry: Registry, engine: Engine, metrics: Metrics | None,
                  ui: Layout, demo: gr.Blocks) -> Callable[[str | None], dict[Any, Any]]:
    def classify(path: str | None) -> dict[Any, Any]:
        current = registry.current  # one read: the whole call uses one version
        if current is None:
            raise gr.Error("No model published yet: run `make demo` or `pulumi up` first.")
        if not path:
            return {ui.label: None, ui.answered: ""}
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:  # the upload cache's cap deleted it meanwhile
            raise gr.Error("Your image is no longer on the server (uploads are kept up to a "
                           "size limit): send it again.") from None
        if untracked_upload(path, demo):
            Path(path).unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # its folder, named by its hash, if now empty
                Path(path).parent.rmdir()
        try:  # the API's own path: decode pool, memory budget, batches
            with engine.request():
                result = engine.classify_blocking(current, data)
        except BadImage as e:
            raise gr.Error(str(e)) from None
        if metrics:
            metrics.observe_prediction(current.version, result["prediction"], "ui")
        return {ui.label: result["probabilities"],
                ui.answered: f"Answered by version {literal(current.version)}"}

    return classify


def make_refresh(registry: Registry, board: ProgressBoard,
                 ui: Layout) -> Callable[[str], dict[Any, Any]]:
    """Redraw every component that shows the served version, when that version changed."""

    def refresh(shown: str) -> dict[Any, Any]:
        current = registry.current
        key = current.version if current else ""
        if shown == key and shown != "?":
            return gr.skip()
        if current is None:
            return {ui.shown: "", ui.status: status_markdown(None),
                    ui.no_model: no_model_markdown(registry),
                    ui.empty: gr.Column(visible=True), ui.main: gr.Column(visible=False)}
        samples = [[str(p)] for p in current.examples if p.is_file()]
        return {
            ui.shown: key, ui.status: status_markdown(current),
            ui.empty: gr.Column(visible=False), ui.main: gr.Column(visible=True),
            ui.examples: gr.Dataset(samples=samples, visible=bool(samples)),
            ui.curves: current.file("curves.png"),
            ui.confusion: current.file("confusion_matrix.png"),
            ui.epochs: epoch_rows(current.metrics), ui.details: run_details(current),
            ui.versions: version_rows(registry, board, current),
            ui.summary: run_summary(current),
        }

    return refresh


def make_pick_example(registry: Registry) -> Callable[[int], str | None]:
    def pick_example(index: int) -> str | None:
        current = registry.current
        if current is None or not 0 <= index < len(current.examples):
            return None
        return str(current.examples[index])

    return pick_example


@dataclass
class Layout:
    """The components the event handlers read or write (filled by the tab builders)."""

    shown: Any = None
    status: Any = None
    no_model: Any = None
    empty: Any = None
    main: Any = None
    image: Any = None
    button: Any = None
    label: Any = None
    answered: Any = None
    examples: Any = None
    summary: Any = None
    curves: Any = None
    confusion: Any = None
    epochs: Any = None
    details: Any = None
    versions: Any = None
    reload_versions: Any = None
    progress_shown: Any = None
    retrains: Any = None
    no_retrains: Any = None
    retrains_shown: Any = None
    progress_panels: list[Any] = field(default_factory=list)
    monitoring: MonitoringPanel | None = None

    @property
    def outputs(self) -> list[Any]:
        """Every component ``make_refresh`` may redraw."""
        return [self.shown, self.status, self.no_model, self.empty, self.main, self.examples, self.curves,
                self.confusion, self.epochs, self.details, self.versions, self.summary]


def predict_tab(ui: Layout) -> None:
    with gr.Tab("Predict", id="predict"):
        with gr.Row(equal_height=True):
            with gr.Column():
                ui.image = gr.Image(type="filepath", image_mode=None, height=320,
                                    sources=["upload", "clipboard"], label="Your image",
                                    elem_id="input-image")
                ui.button = gr.Button("Classify", variant="primary")
            with gr.Column():
                ui.label = gr.Label(num_top_classes=5, label="Prediction", elem_id="prediction")
                ui.answered = gr.Markdown(elem_id="answered-by")
        ui.examples = gr.Dataset(components=[ui.image], samples=[], type="index",
                                 label="Examples from the test set (click one)",
                                 samples_per_page=30)


def build_layout() -> Layout:
    """All components, inside the current gr.Blocks context."""
    ui = Layout(shown=gr.State("?"), progress_shown=gr.State("?"),  # "?": redraw on load
                retrains_shown=gr.State("?"))
    gr.Markdown(HEADER, elem_id="header")
    with gr.Column(visible=True, elem_id="no-model") as ui.empty:
        ui.no_model = gr.Markdown(NO_MODEL)
        ui.progress_panels.append(progress_panel("progress-first-run"))
    with gr.Column(visible=False) as ui.main:
        ui.status = gr.Markdown(elem_id="model-status")
        with gr.Tabs():
            predict_tab(ui)
            training_tab(ui)
            models_tab(ui)
            ui.monitoring = monitoring_tab()
    return ui


def wire_events(demo: gr.Blocks, ui: Layout, registry: Registry, engine: Engine,
                metrics: Metrics | None, board: ProgressBoard, monitor: Any = None) -> None:
    refresh = make_refresh(registry, board, ui)
    progress = make_refresh_progress(board, ui.progress_panels, ui.progress_shown)
    progress_outputs = [ui.progress_shown] + [c for p in ui.progress_panels for c in p.outputs]
    monitoring = make_refresh_monitoring(monitor, registry, ui.monitoring)
    retrains = make_refresh_retrains(RetrainBoard(registry, board), ui.retrains,
                                     ui.no_retrains, ui.retrains_shown)
    timer = gr.Timer(REFRESH_SECONDS)
    for handler, state, outputs in ((refresh, ui.shown, ui.outputs),
                                    (progress, ui.progress_shown, progress_outputs),
                                    (monitoring, ui.monitoring.shown, ui.monitoring.outputs),
                                    (retrains, ui.retrains_shown,
                                     [ui.retrains_shown, ui.retrains, ui.no_retrains])):
        timer.tick(handler, state, outputs, show_progress="hidden", api_name=False,
                   queue=False)
        demo.load(handler, state, outputs, api_name=False, queue=False)
    gr.on([ui.image.change, ui.button.click], make_classify(registry, engine, metrics, ui, demo),
          ui.image, [ui.label, ui.answered], api_name="predict")
    ui.examples.click(make_pick_example(registry), ui.examples, ui.image, api_name=False)
    ui.reload_versions.click(lambda: version_rows(registry, board, registry.current), None,
                             ui.versions, api_name=False)
    # A hidden button, only for its API endpoint /status (gradio_client, tests).
    gr.Button(visible=False).click(
        lambda: status_markdown(registry.current), None, ui.status,
        api_name="status")


def build_demo(registry: Registry, engine: Engine, metrics: Metrics | None = None,
               delete_cache: tuple[float, float] | None = None,
               board: ProgressBoard | None = None, monitor: Any = None) -> gr.Blocks:
    """The Blocks app bound to one registry (tests build several in one process).

    ``delete_cache`` = (every s, older than s): Gradio deletes this app's uploads and
    cached files on that schedule, and all of them at shutdown.
    """
    with gr.Blocks(title="trainstack · image classifier", delete_cache=delete_cache) as demo:
        ui = build_layout()
        wire_events(demo, ui, registry, engine, metrics, board or ProgressBoard(registry),
                    monitor)
    return demo
