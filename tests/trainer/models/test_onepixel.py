"""The one-pixel convolution path computes what nn.Conv2d computes, gradients included."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn

from trainer.models.onepixel import OnePixelConv2d, use_one_pixel_convs
from trainer.models.zoo import build_model
from trainer.publish.publication import export_program


def twins(conv: nn.Conv2d) -> tuple[nn.Conv2d, nn.Conv2d]:
    fast = copy.deepcopy(conv)
    assert use_one_pixel_convs(fast) == 1
    return conv, fast


def forward_and_grads(module: nn.Module, x: torch.Tensor):
    x = x.clone().requires_grad_()
    out = module(x)
    (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
    return out.detach(), x.grad, [p.grad for p in module.parameters()]


@pytest.mark.parametrize("size, kwargs", [
    (1, {"kernel_size": 3, "padding": 1}),                 # ResNet's last stage
    (2, {"kernel_size": 3, "stride": 2, "padding": 1}),    # its stride-2 entry
    (2, {"kernel_size": 1, "stride": 2}),                  # its downsample
    (3, {"kernel_size": 3}),                               # no padding: every tap inside
    (2, {"kernel_size": (3, 5), "stride": (2, 3), "padding": (1, 2)}),  # not square
    (1, {"kernel_size": 3, "padding": 2, "dilation": 2, "bias": True}),
])
def test_one_pixel_outputs_match_the_stock_convolution_in_float64(size, kwargs):
    torch.manual_seed(0)
    stock, fast = twins(nn.Conv2d(5, 7, **{"bias": False, **kwargs}).double())
    x = torch.randn(4, 5, size, size, dtype=torch.float64)
    assert fast.takes_linear_path(x)
    expected, got = forward_and_grads(stock, x), forward_and_grads(fast, x)
    assert got[0].shape == expected[0].shape == (4, 7, 1, 1)
    torch.testing.assert_close(got[0], expected[0])
    torch.testing.assert_close(got[1], expected[1])
    for fast_grad, stock_grad in zip(got[2], expected[2], strict=True):
        torch.testing.assert_close(fast_grad, stock_grad)


def test_larger_outputs_and_evaluation_take_the_stock_path():
    conv = OnePixelConv2d(3, 4, 3, padding=1)
    assert not conv.takes_linear_path(torch.zeros(1, 3, 2, 2))  # a 2x2 output
    assert conv.takes_linear_path(torch.zeros(1, 3, 1, 1))
    conv.eval()
    assert not conv.takes_linear_path(torch.zeros(1, 3, 1, 1))
    assert not OnePixelConv2d(4, 4, 3, padding=1, groups=2).takes_linear_path(
        torch.zeros(1, 4, 1, 1))


def test_a_whole_stock_resnet_trains_identically_and_exports_stock_convolutions():
    torch.manual_seed(0)
    stock = build_model("resnet18-imagenet", in_channels=3, num_classes=10).double()
    fast = copy.deepcopy(stock)
    assert use_one_pixel_convs(fast) == 20
    assert fast.state_dict().keys() == stock.state_dict().keys()
    x = torch.randn(6, 3, 32, 32, dtype=torch.float64)
    expected, got = forward_and_grads(stock, x), forward_and_grads(fast, x)
    torch.testing.assert_close(got[0], expected[0])
    for fast_grad, stock_grad in zip(got[2], expected[2], strict=True):
        torch.testing.assert_close(fast_grad, stock_grad)

    program = torch.export.load(io.BytesIO(export_program(fast, (3, 32, 32))))
    targets = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert "aten.conv2d.default" in targets and "aten.linear.default" in targets  # the fc
    assert sum("conv2d" in t for t in (str(n.target) for n in program.graph.nodes)) == 20


def test_channels_last_weights_get_gradients_with_their_own_strides():
    """DDP copies gradients into buckets laid out like the parameters; a mismatch costs
    a copy per step and a warning."""
    model = build_model("resnet18-imagenet", in_channels=3, num_classes=10)
    model = model.to(memory_format=torch.channels_last)
    use_one_pixel_convs(model)
    x = torch.randn(2, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    model(x).sum().backward()
    mismatched = [name for name, p in model.named_parameters() if p.grad.stride() != p.stride()]
    assert mismatched == []
