"""One version's forward pass: ``uint8`` pixels in, class probabilities out.

The batched path and the one-at-a-time path both call a :class:`Runner`; they differ only
in how many images one call gets. On a GPU the uint8 batch is copied (pinned, async) and
normalized on the device: four times less to copy than float32.

Precision: ``fp32``, or ``bf16`` where the device computes bf16 natively (CPUs
with AVX-512 BF16/AMX, Ampere+ GPUs). ``auto`` picks bf16 there unless the version's own
published examples (2 per class) show more than 1 in 20 changing class; elsewhere fp32.
Measured on the CIFAR-10 sample's 1,017 test images (bench/serving_agreement.py): resnet18
(8 epochs) 51.72% fp32, 51.92% bf16, 13 predictions differ; smallcnn (15 epochs) 65.88%
fp32, 65.68% bf16, 4 differ; probabilities within ~1e-2.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .predict import decode, normalize

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16")
MAX_CHANGED = 1 / 20  # share of a version's examples bf16 may classify differently


def model_device(model: Any) -> torch.device:
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")


def bf16_supported(device: torch.device) -> bool:
    """Native bf16 arithmetic (not emulated, which would be slower than fp32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.backends.mkldnn.is_available()
                and torch.ops.mkldnn._is_mkldnn_bf16_supported())


class Runner:
    def __init__(self, version: Any, precision: str = "fp32"):
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be fp32 or bf16, got {precision!r}")
        self.version, self.precision = version, precision
        self.device = model_device(version.model)
        self.model, self.dtype = version.model, torch.float32
        if precision == "bf16":
            self.model, self.dtype = bf16_program(version)

    def __call__(self, items: Sequence[np.ndarray]) -> list[list[float]]:
        """Probabilities for each ``C x H x W`` uint8 image, in order."""
        batch = torch.from_numpy(np.stack(items))
        if self.device.type == "cuda":
            batch = batch.pin_memory().to(self.device, non_blocking=True)
        x = normalize(batch, self.version.meta).to(self.dtype)
        # Autocast only for programs whose weights stayed fp32 (see bf16_program).
        autocast = self.precision == "bf16" and self.dtype == torch.float32
        with torch.inference_mode(), torch.autocast(self.device.type, torch.bfloat16,
                                                    enabled=autocast):
            logits = self.model(x)
        return torch.softmax(logits.float(), dim=1).cpu().tolist()


def bf16_program(version: Any) -> tuple[Any, torch.dtype]:
    """A copy of the program with bf16 weights, or the fp32 one (then run under autocast).

    bf16 weights: converted once. Autocast would convert every weight on every forward
    pass (its cast cache only keeps weights that require grad): measured, a quarter of a
    batched ResNet-18 forward. A program that does not run in bf16 (e.g. an fp32 constant
    in its graph) keeps fp32 weights and autocast.
    """
    try:
        model = copy.deepcopy(version.model).to(torch.bfloat16)
        x = torch.zeros(1, *version.meta.input_size, dtype=torch.bfloat16,
                        device=model_device(model))
        with torch.inference_mode():
            out = model(x)
        if tuple(out.shape) != (1, len(version.meta.classes)) or not torch.isfinite(out).all():
            raise ValueError(f"bf16 output {tuple(out.shape)} or not finite")
        return model, torch.bfloat16
    except Exception as e:  # noqa: BLE001  any graph that cannot take bf16 weights
        log.info("version %s does not run with bf16 weights (%s: %s): bf16 autocast instead",
                 version.version, type(e).__name__, e)
        return version.model, torch.float32


def choose_precision(version: Any, requested: str) -> str:
    """The precision to serve ``version`` in (see the module docstring)."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    device = model_device(version.model)
    if requested == "fp32":
        return "fp32"
    if not bf16_supported(device):
        if requested == "bf16":
            log.warning("bf16 requested but %s has no native bf16: serving fp32", device)
        return "fp32"
    if requested == "bf16":
        return "bf16"
    samples = [decode(path.read_bytes(), version.meta) for path in version.examples
               if path.is_file()]
    if not samples:
        return "bf16"
    fp32 = np.asarray(Runner(version, "fp32")(samples)).argmax(axis=1)
    bf16 = np.asarray(Runner(version, "bf16")(samples)).argmax(axis=1)
    changed = int((fp32 != bf16).sum())
    choice = "bf16" if changed <= MAX_CHANGED * len(samples) else "fp32"
    log.info("version %s: bf16 changes the class of %d of its %d examples: serving %s",
             version.version, changed, len(samples), choice)
    return choice
