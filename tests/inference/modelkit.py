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
from PIL import Image, ImageDraw
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


def chart(title: str, lines: dict[str, list[float]]) -> bytes:
    """A small line chart drawn with PIL (fast; matplotlib is the trainer's business)."""
    image = Image.new("RGB", (480, 300), "white")
    draw = ImageDraw.Draw(image)
    draw.text((12, 8), title, fill="black")
    draw.rectangle((40, 30, 460, 270), outline=(120, 120, 120))
    palette = [(79, 70, 229), (14, 165, 233), (234, 88, 12), (22, 163, 74)]
    for (name, ys), colour in zip(lines.items(), palette):
        pts = [(40 + 420 * i / max(1, len(ys) - 1), 270 - 240 * y) for i, y in enumerate(ys)]
        draw.line(pts, fill=colour, width=3)
        draw.text((pts[-1][0] - 80, pts[-1][1] - 14), name, fill=colour)
    return png(image)


def fake_history(epochs: int = 4, final_acc: float = 1.0) -> list[dict]:
    return [{"epoch": e + 1, "train_loss": 1.1 / (e + 1), "train_acc": final_acc * (e + 1) / epochs,
             "test_loss": 1.2 / (e + 1), "test_acc": final_acc * (e + 1) / epochs,
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
        "curves.png": chart("loss and accuracy", {
            "train_loss": [h["train_loss"] / 1.2 for h in history],
            "test_acc": [h["test_acc"] for h in history]}),
        "confusion_matrix.png": chart("confusion matrix", {"diag": [1.0, 1.0]}),
    }
    examples = {f"examples/{i}-{c}.png": png(solid(c, (32, 32))) for i, c in enumerate(CLASSES)}
    for rel, data in {**files, **examples}.items():
        if rel not in skip_files:
            store.put_bytes(prefix + rel, data)
    meta = {
        "model": name.split("-")[0], "dataset": name.split("-")[-1], "version": version,
        "run_id": "c0ffee42", "classes": classes, "input_size": input_size,
        "mean": mean, "std": std,
        "train_config": {"model": "colournet", "dataset": "colours", "epochs": len(history),
                         "batch_size": 64, "lr": 0.1, "seed": 0},
        "metrics": {"test_acc": test_acc, "test_loss": history[-1]["test_loss"],
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
