"""Convolutions with a one-pixel output, trained as one matrix multiply.

The stock ResNet-18 (7x7/2 stem + max-pool) shrinks a 32x32 image to 1x1 in its last
stage, where a 3x3 convolution with padding 1 sees one real pixel and eight zeros.
oneDNN on CPUs without AMX computes such weight gradients with a generic kernel that
takes ~10 ms per 512->512 layer at batch 128: a quarter of a training step. Written as
``linear`` over the taps that fall inside the image, the same convolution is the same
sums, a few small GEMMs instead, and the training step is about a third faster
(bench/train_throughput.py). Out-of-image taps get a zero gradient, as they do in the
convolution.

Only training takes this path: evaluation and the exported model run the stock
``nn.Conv2d`` code, and the module keeps its class's parameters and state-dict keys.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def inside_taps(size: int, kernel: int, padding: int, dilation: int) -> slice:
    """The kernel taps of output position 0 that land on real input (not padding)."""
    taps = [t for t in range(kernel) if 0 <= t * dilation - padding < size]
    return slice(taps[0], taps[-1] + 1)


def input_window(taps: slice, padding: int, dilation: int) -> slice:
    """The input positions those taps read."""
    return slice(taps.start * dilation - padding, (taps.stop - 1) * dilation - padding + 1,
                 dilation)


class OnePixelConv2d(nn.Conv2d):
    """``nn.Conv2d`` that, while training, computes a 1x1 output as ``linear``."""

    def takes_linear_path(self, x: torch.Tensor) -> bool:
        if not self.training or self.groups != 1 or self.padding_mode != "zeros":
            return False
        if isinstance(self.padding, str):  # "same"/"valid": leave it to the stock code
            return False
        return all(output_size(x.shape[-2 + i], self.kernel_size[i], self.stride[i],
                               self.padding[i], self.dilation[i]) == 1 for i in (0, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.takes_linear_path(x):
            return super().forward(x)
        rows, cols = (inside_taps(x.shape[-2 + i], self.kernel_size[i], self.padding[i],
                                  self.dilation[i]) for i in (0, 1))
        window = x[:, :, input_window(rows, self.padding[0], self.dilation[0]),
                   input_window(cols, self.padding[1], self.dilation[1])]
        weight = self.weight[:, :, rows, cols]
        # Channel-minor flattening: views of channels_last tensors, and a weight gradient
        # with the parameter's own strides (which DDP's gradient buckets expect).
        return F.linear(window.permute(0, 2, 3, 1).flatten(1),
                        weight.permute(0, 2, 3, 1).flatten(1), self.bias)[:, :, None, None]


def use_one_pixel_convs(model: nn.Module) -> int:
    """Give every plain ``nn.Conv2d`` of ``model`` the one-pixel training path, in place;
    returns how many. Parameters, buffers and state-dict keys stay as they are."""
    count = 0
    for module in model.modules():
        if type(module) is nn.Conv2d:
            module.__class__ = OnePixelConv2d
            count += 1
    return count
