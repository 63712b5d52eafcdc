"""Build and publish a tiny model through the trainer's own publication code and schema
(trainer.publish.publication.write_version, trainer.contract.schema), so the app is tested without training.

The model recognizes solid colours (red / green / blue): its logits are the mean of each
normalized channel, so a red image is "red" with high confidence - a real assertion.
Shaped like ``trainer.publish.publication.publish`` so it can be swapped for it.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image
from torch import nn

from trainer.contract.layout import METRICS_FILE, MODEL_FILE, REFERENCE_FILE, ModelKeys
from trainer.contract.reporting.progress import RunProgress, mlflow_run_page
from trainer.contract.schema import EpochRecord, MetricsSummary, VersionMeta, VersionMetrics
from trainer.publish.publication import created_at, finish_publication, write_version

CLASSES = ["red", "green", "blue"]
COLOURS = {"red": (230, 20, 20), "green": (20, 200, 40), "blue": (20, 40, 230)}
INPUT_SIZE = [3, 8, 8]
MEAN, STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]
MODEL_NAME = "colournet-colours"


class ColourNet(nn.Module):
    """Per-channel mean, scaled: the dominant channel wins."""

    def __init__(self, scale: float = 2.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(scale), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3)) * self.scale


def export_model(model: nn.Module, input_size=INPUT_SIZE) -> bytes:
    """As the trainer does: torch.export with a dynamic batch dimension, saved to bytes."""
    model = model.eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(model, (torch.zeros(2, *input_size),),
                                  dynamic_shapes=({0: batch},))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def solid(colour: str, size=(64, 48), mode: str = "RGB") -> Image.Image:
    return Image.new("RGB", size, COLOURS[colour]).convert(mode)


def figure_png(draw) -> bytes:
    """A small matplotlib figure (what the trainer publishes), drawn by ``draw(fig)``."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.4), dpi=90, layout="constrained")
    draw(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def curves_png(history: list[EpochRecord]) -> bytes:
    def draw(fig):
        loss, acc = fig.subplots(1, 2)
        epochs = [h.epoch for h in history]
        for split in ("train", "test"):
            loss.plot(epochs, [getattr(h, f"{split}_loss") for h in history], marker="o",
                      label=split)
            acc.plot(epochs, [getattr(h, f"{split}_acc") for h in history], marker="o",
                     label=split)
        loss.set_title("loss"), acc.set_title("accuracy"), acc.legend()
    return figure_png(draw)


def confusion_png(confusion: list[list[int]], classes: list[str]) -> bytes:
    def draw(fig):
        ax = fig.subplots()
        ax.imshow(confusion, cmap="Blues")
        ax.set_xticks(range(len(classes)), classes, rotation=45)
        ax.set_yticks(range(len(classes)), classes)
        ax.set_xlabel("predicted"), ax.set_ylabel("true")
    return figure_png(draw)


def fake_history(epochs: int = 4, final_acc: float = 1.0) -> list[EpochRecord]:
    return [EpochRecord(epoch=e + 1, train_loss=1.1 / (e + 1),
                        train_acc=final_acc * (1 - 0.5 ** (e + 1)), test_loss=1.2 / (e + 1),
                        test_acc=final_acc * (1 - 0.45 ** (e + 1)), seconds=1.5, img_per_s=800.0)
            for e in range(epochs)]


def colour_images(n: int, seed: int = 0, brightness: float = 1.0,
                  noise: float = 12.0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` noisy solid-colour images (uint8 N x 3 x 8 x 8) and their labels: the colour
    model's "test split", and what in-distribution traffic looks like. ``brightness`` < 1
    darkens them (a shift)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(CLASSES), n)
    base = np.array([COLOURS[c] for c in CLASSES], dtype=np.float64)[labels]
    jitter = rng.uniform(0.7, 1.0, (n, 1))  # some light variation within the class
    images = (base * jitter)[:, :, None, None] + rng.normal(0, noise, (n, 3, *INPUT_SIZE[1:]))
    return np.clip(images * brightness, 0, 255).astype(np.uint8), labels


def colour_reference(model: nn.Module | None = None, n: int = 400) -> bytes:
    """The colour model's reference, computed by the trainer's own code on colour_images."""
    from trainer.publish.reference import build_reference

    images, labels = colour_images(n)
    return build_reference(model or ColourNet(), torch.from_numpy(images),
                           torch.from_numpy(labels), CLASSES, MEAN, STD, 1.0).to_json()


def publish_version(store, version: str, *, model: nn.Module | None = None,
                    name: str = MODEL_NAME, test_acc: float = 1.0,
                    model_bytes: bytes | None = None, skip_files: tuple[str, ...] = (),
                    move_latest: bool = True, classes: list[str] = CLASSES,
                    input_size: list[int] = INPUT_SIZE, mean: list[float] = MEAN,
                    std: list[float] = STD, run_id: str = "c0ffee42",
                    reference: bool = False, promotion=None, retrain=None) -> str:
    """Upload every file of a version, then (last) move ``latest.json``, as the trainer does.

    ``model_bytes`` / ``skip_files`` / ``move_latest=False`` build deliberately broken or
    unfinished versions for tests; ``classes``/``input_size``/``mean``/``std`` describe
    another model (the benchmark's); ``promotion`` is the gate's verdict (a candidate's
    publication leaves latest.json where it is), ``retrain`` why a retrain trained it.
    """
    store.ensure_buckets()
    history = fake_history(final_acc=test_acc)
    confusion = [[10 if i == j else 0 for j in range(len(classes))] for i in range(len(classes))]
    metrics = VersionMetrics(epochs=history, confusion_matrix=confusion, classes=classes,
                             world_size=2)
    files = {
        MODEL_FILE: model_bytes if model_bytes is not None else export_model(model or ColourNet()),
        METRICS_FILE: metrics.to_json(),
        "curves.png": curves_png(history),
        "confusion_matrix.png": confusion_png(confusion, classes),
    }
    if reference:
        files[REFERENCE_FILE] = colour_reference(model)
    examples = {f"examples/{i}-{c}.png": png(solid(c, (32, 32))) for i, c in enumerate(CLASSES)
                if classes == CLASSES}
    model_arch, _, dataset = name.partition("-")
    meta = VersionMeta(
        model=model_arch, dataset=dataset, version=version, run_id=run_id, classes=classes,
        input_size=input_size, mean=mean, std=std,
        train_config={"model": "colournet", "dataset": "colours", "epochs": len(history),
                      "batch_size": 64, "lr": 0.1, "seed": 0},
        metrics=MetricsSummary.of(history), created_at=created_at(version), files=list(files),
        examples=list(examples), reference=REFERENCE_FILE if reference else "",
        promotion=promotion, retrain=retrain)
    if not skip_files and move_latest:
        write_version(store, meta, {**files, **examples})
        return version
    keys = ModelKeys(name)
    for rel, data in {**files, **examples}.items():
        if rel not in skip_files:
            store.put_bytes(keys.version_file(version, rel), data)
    store.put_bytes(keys.meta(version), meta.to_json())
    if move_latest:
        finish_publication(store, name, version)
    return version


CNN_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
               "ship", "truck"]
CNN_NAME = "smallcnn-cifar10"


def publish_cnn(store, version: str, seed: int = 0) -> str:
    """The trainer's smallcnn (random weights, fixed by ``seed``) as a 32x32 RGB model:
    real convolutions, whose kernels differ by batch size, unlike ColourNet's mean."""
    from trainer.models.zoo import build_model

    torch.manual_seed(seed)
    model = build_model("smallcnn", in_channels=3, num_classes=len(CNN_CLASSES))
    with torch.no_grad():  # give BatchNorm's running stats real values too
        model.train()(torch.rand(64, 3, 32, 32))
    return publish_version(store, version, model=model.eval(), name=CNN_NAME,
                           classes=CNN_CLASSES, input_size=[3, 32, 32],
                           mean=[0.49, 0.48, 0.45], std=[0.25, 0.24, 0.26],
                           model_bytes=export_model(model.eval(), [3, 32, 32]))


def write_progress(store, run_id: str, epoch: int, epochs: int = 5, *,
                   name: str = MODEL_NAME, state: str = "training",
                   version: str | None = None, mlflow: tuple[str, str] | None = None,
                   mlflow_base: str = "http://mlflow.trainstack.svc:5000",
                   retrain=None) -> RunProgress:
    """A run's progress record as rank 0 writes it (trainer.contract.reporting.progress.RunProgress at
    trainer.contract.layout.ModelKeys.progress); ``mlflow`` = (experiment id, run id)."""
    store.ensure_buckets()
    model_arch, _, dataset = name.partition("-")
    experiment, mlflow_run = mlflow or (None, None)
    record = RunProgress(
        run_id=run_id, model=model_arch, dataset=dataset, state=state, epoch=epoch,
        epochs=epochs, world_size=2, started_at="2026-11-23T15:00:00Z",
        updated_at=f"2026-11-23T15:{epoch:02d}:00Z",
        history=fake_history(epochs)[:epoch], version=version,
        mlflow_run_id=mlflow_run, mlflow_experiment_id=experiment,
        mlflow_url=mlflow_run_page(mlflow_base, experiment, mlflow_run) if mlflow else None,
        retrain=retrain)
    store.put_bytes(ModelKeys(name).progress(run_id), record.to_json())
    return record
