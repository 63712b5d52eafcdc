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

Program: ``frozen`` (the default; CPU only) runs a TorchScript trace of the published
program, frozen (weights as constants, batch norm folded into the convolutions), and checked
against the program itself at two other batch sizes before it is used (their logits equal
up to rounding: FROZEN_TOLERANCE); a program whose trace does not match (e.g. Python
control flow on the batch size) is served ``eager``, as published: the same answers,
only slower. Why: an eager program returns to Python, and so takes the GIL, between
every one of its ~70 operators; while the event loop and the decoders hold the GIL, the
inference thread waits at each one. The frozen program runs the whole forward pass in
C++ without the GIL. Measured on 2 CPUs, resnet18 bf16, batches of 8: 7% faster alone,
10-14% more req/s served to 16 clients, and 10-15x faster than eager next to a thread
that holds the GIL. TorchScript is deprecated, but its alternatives measured worse
here: an AOTInductor package ran 7-10% slower than eager on this CPU, and
``torch.compile`` needs a C++ compiler in the image and one compile per batch size.
"""

from __future__ import annotations

import copy
import io
import logging
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from inference.serving.predict import decode, normalize

log = logging.getLogger(__name__)

# The tracer's notes (shapes read as Python numbers: what they would break, the check in
# frozen_program catches) and its deprecation notice, once per process. Narrow filters
# here rather than catch_warnings around the trace: that swaps the process-wide filter
# list while other threads decode, and is documented as not thread-safe.
warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
warnings.filterwarnings("ignore", message=r"`torch\.jit\.(trace|trace_method|save|load|freeze)` "
                        r"is deprecated")

PRECISIONS = ("auto", "fp32", "bf16")
PROGRAMS = ("frozen", "eager")
MAX_CHANGED = 1 / 20  # share of a version's examples bf16 may classify differently
TRACE_BATCH = 2  # traced at this batch size, checked at two others
# How far a frozen program's logits may be from the program's, as a share of the largest
# logit: the two round at different places (batch norm folded into the convolutions).
# fp32: a few ulps. bf16 keeps 8 significant bits: measured up to 2.4% on the digits
# demo's model (400 random batches), 3.8% on untrained ones. A trace that took another
# branch is off by about the logits themselves (100%). Probabilities were compared
# before, within 0.02 in bf16: 1 in 7 random batches failed that on the digits model
# (two logits near a tie turn 1 ulp into a few % of probability), and the version was
# served eager for nothing.
FROZEN_TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 0.1}


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
    def __init__(self, version: Any, precision: str = "fp32", program: str = "frozen"):
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be fp32 or bf16, got {precision!r}")
        if program not in PROGRAMS:
            raise ValueError(f"program must be one of {', '.join(PROGRAMS)}, got {program!r}")
        self.version, self.precision = version, precision
        self.device = model_device(version.model)
        self.model, self.dtype = version.model, torch.float32
        if precision == "bf16":
            self.model, self.dtype = bf16_program(version)
        # Autocast only for programs whose weights stayed fp32 (see bf16_program); a trace
        # would not record it.
        self.autocast = precision == "bf16" and self.dtype == torch.float32
        self.program = "eager"
        # CPU only: measured there. On a GPU TorchScript's fuser would build kernels per
        # batch size later, on the inference thread and after the check below.
        if program == "frozen" and not self.autocast and self.device.type == "cpu":
            frozen = frozen_program(self.model, version, self.dtype)
            if frozen is not None:
                self.model, self.program = frozen, "frozen"

    def __call__(self, items: Sequence[np.ndarray]) -> list[list[float]]:
        """Probabilities for each ``C x H x W`` uint8 image, in order."""
        batch = torch.from_numpy(np.stack(items))
        if self.device.type == "cuda":
            batch = batch.pin_memory().to(self.device, non_blocking=True)
        x = normalize(batch, self.version.meta).to(self.dtype)
        with torch.inference_mode(), torch.autocast(self.device.type, torch.bfloat16,
                                                    enabled=self.autocast):
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


def check_inputs(shape: tuple[int, ...]) -> list[torch.Tensor]:
    """Random batches at two batch sizes the trace was not made with (fixed seed)."""
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(batch, *shape, generator=generator) for batch in (1, TRACE_BATCH + 1)]


def answers_agree(want: torch.Tensor, got: torch.Tensor, dtype: torch.dtype) -> bool:
    """Whether ``got`` logits are ``want`` up to rounding (FROZEN_TOLERANCE)."""
    if got.shape != want.shape:
        return False
    scale = want.float().abs().max().clamp_min(1e-6)
    return bool((got.float() - want.float()).abs().max() <= FROZEN_TOLERANCE[dtype] * scale)


def frozen_program(model: Any, version: Any, dtype: torch.dtype,
                   checks: Sequence[torch.Tensor] | None = None) -> Any | None:
    """The frozen trace of ``model`` (see the module docstring), or None if it does not
    give the program's answers on ``checks`` (default: check_inputs)."""
    device = model_device(model)
    shape = tuple(version.meta.input_size)
    try:
        with torch.inference_mode():
            example = torch.zeros(TRACE_BATCH, *shape, dtype=dtype, device=device)
            # Through save/load: freezing the traced module itself keeps a copy of every
            # weight alive after the runner is gone (measured: one model's size per version).
            buffer = io.BytesIO()
            torch.jit.save(torch.jit.trace(model, example, check_trace=False), buffer)
            buffer.seek(0)
            frozen = torch.jit.freeze(torch.jit.load(buffer, map_location=device).eval())
            for x in checks if checks is not None else check_inputs(shape):
                x = x.to(device, dtype)
                if not answers_agree(model(x), frozen(x), dtype):
                    raise ValueError(f"its answers differ from the program's at batch {len(x)}")
        return frozen
    except Exception as e:  # noqa: BLE001  any program the tracer cannot reproduce
        log.info("version %s is served as published (eager): the same answers, a little "
                 "slower; its frozen trace did not reproduce it (%s: %s)",
                 version.version, type(e).__name__, e)
        return None


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
    fp32 = np.asarray(Runner(version, "fp32", "eager")(samples)).argmax(axis=1)
    bf16 = np.asarray(Runner(version, "bf16", "eager")(samples)).argmax(axis=1)
    changed = int((fp32 != bf16).sum())
    choice = "bf16" if changed <= MAX_CHANGED * len(samples) else "fp32"
    log.info("version %s: bf16 changes the class of %d of its %d examples: serving %s",
             version.version, changed, len(samples), choice)
    return choice
