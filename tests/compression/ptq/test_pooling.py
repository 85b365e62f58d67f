"""The channels-last max pooling of the calibration passes changes nothing but speed: the same values,
a contiguous output, the hooks gone afterwards; inputs it cannot help pass through untouched."""

from __future__ import annotations

import torch
from torch import nn

from squeezer.compression.ptq.pooling import channels_last_max_pooling


def test_channels_last_max_pooling_is_bit_identical_and_leaves_no_hooks():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.MaxPool2d(3, 2, 1), nn.Conv2d(8, 4, 1), nn.MaxPool2d(2))
    x = torch.randn(2, 3, 33, 31)
    with torch.no_grad():
        expected = model(x)
        inner = []
        model[3].register_forward_pre_hook(lambda _m, args: inner.append(args[0].is_contiguous()))
        with channels_last_max_pooling(model):
            got = model(x)
            flat = model[2](torch.randn(8, 5, 5))  # 3-D input: pooled as it is
    assert torch.equal(got, expected)
    assert got.is_contiguous() and inner == [True]  # the layer after the pool reads a contiguous tensor
    assert flat.shape == (8, 3, 3)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in (model[2], model[4]))
