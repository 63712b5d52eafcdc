"""The PNGs of a published version: learning curves, confusion matrix, example images."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # no display in pods or tests
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

from trainer.contract.schema import EpochRecord


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


# train_loss and test_loss are both plain cross-entropy (trainer.run.loop): comparable.
LOSS_LABEL = "cross-entropy (no label smoothing)"


def curves_png(history: list[EpochRecord], title: str) -> bytes:
    epochs = [e.epoch for e in history]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for split in ("train", "test"):
        loss_ax.plot(epochs, [getattr(e, f"{split}_loss") for e in history], marker="o",
                     label=split)
        acc_ax.plot(epochs, [getattr(e, f"{split}_acc") for e in history], marker="o",
                    label=split)
    loss_ax.set(title=f"{title}: loss", xlabel="epoch", ylabel=LOSS_LABEL)
    acc_ax.set(title=f"{title}: accuracy", xlabel="epoch", ylabel="accuracy", ylim=(0, 1))
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    return _png(fig)


def confusion_png(matrix: list[list[int]], classes: list[str]) -> bytes:
    counts = np.asarray(matrix)
    size = max(4.0, 0.6 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(counts, cmap="Blues")
    ax.set(xticks=range(len(classes)), yticks=range(len(classes)),
           xlabel="predicted", ylabel="true", title="confusion matrix (test split)")
    ax.set_xticklabels(classes, rotation=45, ha="right")
    ax.set_yticklabels(classes)
    threshold = counts.max() / 2 if counts.size else 0
    for (row, col), value in np.ndenumerate(counts):
        ax.text(col, row, str(value), ha="center", va="center", fontsize=8,
                color="white" if value > threshold else "black")
    return _png(fig)


def example_pngs(split, classes: list[str], per_class: int):
    """(``<index>-<class>.png``, bytes) for the first ``per_class`` test images of each class."""
    labels = split.labels.cpu().numpy()
    for class_index, class_name in enumerate(classes):
        for index in np.flatnonzero(labels == class_index)[:per_class]:
            pixels = split.images[index].cpu().numpy().transpose(1, 2, 0)
            image = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in class_name)
            yield f"{index}-{safe}.png", buffer.getvalue()
