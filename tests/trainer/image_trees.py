"""Small image-folder trees (``<class>/<image>.png``) generated for tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = {"cat": (200, 30, 30), "dog": (30, 30, 200), "bird": (30, 200, 30)}


def image_tree(root: Path, classes=("cat", "dog"), per_class: int = 6, seed: int = 0,
               size: int = 10) -> Path:
    """A folder of noisy solid-colour PNGs per class; ``seed`` changes every pixel."""
    rng = np.random.default_rng(seed)
    for cls in classes:
        (root / cls).mkdir(parents=True, exist_ok=True)
        base = np.array(COLOURS[cls], dtype=np.int16)
        for i in range(per_class):
            noise = rng.integers(-25, 26, (size, size, 3))
            pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / cls / f"{i}.png")
    return root
