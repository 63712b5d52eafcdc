"""Build and publish a tiny model in exactly the published-version format of
docs/architecture.md ("A published version"), so the app is tested without the trainer.

The model recognizes solid colours (red / green / blue): its logits are the mean of each
normalized channel, so a red image is "red" with high confidence - a real assertion.
Shaped like ``trainer.publish.publish`` so it can be swapped for it.
"""

from __future__ import annotations

import io
import json

import torch
from PIL import Image
from torch import nn

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


def curves_png(history: list[dict]) -> bytes:
    def draw(fig):
        loss, acc = fig.subplots(1, 2)
        epochs = [h["epoch"] for h in history]
        for split in ("train", "test"):
            loss.plot(epochs, [h[f"{split}_loss"] for h in history], marker="o", label=split)
            acc.plot(epochs, [h[f"{split}_acc"] for h in history], marker="o", label=split)
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


def fake_history(epochs: int = 4, final_acc: float = 1.0) -> list[dict]:
    return [{"epoch": e + 1, "train_loss": 1.1 / (e + 1), "train_acc": final_acc * (1 - 0.5 ** (e + 1)),
             "test_loss": 1.2 / (e + 1), "test_acc": final_acc * (1 - 0.45 ** (e + 1)),
             "seconds": 1.5, "img_per_s": 800.0} for e in range(epochs)]


def publish_version(store, version: str, *, model: nn.Module | None = None,
                    name: str = MODEL_NAME, test_acc: float = 1.0,
                    model_bytes: bytes | None = None, skip_files: tuple[str, ...] = (),
                    move_latest: bool = True, classes: list[str] = CLASSES,
                    input_size: list[int] = INPUT_SIZE, mean: list[float] = MEAN,
                    std: list[float] = STD) -> str:
    """Upload every file of a version, then (last) move ``latest.json``.

    ``model_bytes`` / ``skip_files`` build deliberately broken versions for tests;
    ``classes``/``input_size``/``mean``/``std`` describe another model (the benchmark's).
    """
    store.ensure_buckets()
    prefix = f"models/{name}/versions/{version}/"
    history = fake_history(final_acc=test_acc)
    confusion = [[10 if i == j else 0 for j in range(len(classes))] for i in range(len(classes))]
    metrics = {"epochs": history, "confusion_matrix": confusion, "classes": classes,
               "world_size": 2}
    files = {
        "model.pt2": model_bytes if model_bytes is not None else export_model(model or ColourNet()),
        "metrics.json": json.dumps(metrics).encode(),
        "curves.png": curves_png(history),
        "confusion_matrix.png": confusion_png(confusion, classes),
    }
    examples = {f"examples/{i}-{c}.png": png(solid(c, (32, 32))) for i, c in enumerate(CLASSES)
                if classes == CLASSES}
    for rel, data in {**files, **examples}.items():
        if rel not in skip_files:
            store.put_bytes(prefix + rel, data)
    meta = {
        "model": name.split("-")[0], "dataset": name.split("-")[-1], "version": version,
        "run_id": "c0ffee42", "classes": classes, "input_size": input_size,
        "mean": mean, "std": std,
        "train_config": {"model": "colournet", "dataset": "colours", "epochs": len(history),
                         "batch_size": 64, "lr": 0.1, "seed": 0},
        "metrics": {"test_acc": history[-1]["test_acc"], "test_loss": history[-1]["test_loss"],
                    "epochs": len(history), "train_seconds": 6.0},
        "created_at": f"{version[:4]}-{version[4:6]}-{version[6:8]}T{version[9:11]}:"
                      f"{version[11:13]}:{version[13:15]}Z",
        "files": list(files), "examples": list(examples),
    }
    store.put_bytes(prefix + "meta.json", json.dumps(meta).encode())
    store.put_bytes(f"metrics/{name}/{version}.json", files["metrics.json"])
    if move_latest:
        store.put_bytes(f"models/{name}/latest.json", json.dumps({"version": version}).encode())
    return version
