"""A small digits CNN with outlier channels: the case plain post-training quantization gets wrong.

`trained_plain_cnn` trains a conv-ReLU-pool network without BatchNorm on 16x16 digits. `with_outlier_channels`
rewrites it exactly (the same FP32 function): the two most active channels of the first conv are scaled
by `factor` and the second conv's weights for them by 1 / factor. A per-tensor activation grid then
spends its levels on those two channels and the others round to zero; cross-layer equalization or
leaving the layer in FP32 (accuracy control) brings the accuracy back. Used by `bench/bench_ptq.py` and
`tests/compression/ptq`.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.utils.data import DataLoader

from squeezer.examples.digits import accuracy, digits_loaders, train_epoch


def plain_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 16, 10),
    )


def trained_plain_cnn(epochs: int = 5) -> tuple[nn.Sequential, DataLoader, DataLoader]:
    """(model in eval mode, train loader, validation loader) on 16x16 digits; Adam, seed 0 (~94%)."""
    torch.manual_seed(0)
    train, val = digits_loaders(image_size=16)
    model = plain_cnn()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        train_epoch(model, train, optimizer)
    return model.eval(), train, val


def with_outlier_channels(model: nn.Sequential, val: DataLoader, factor: float = 1000.0) -> nn.Sequential:
    """A copy computing the same function, with the first conv's two most active channels x `factor`."""
    model = copy.deepcopy(model).eval()
    first, second = model[0], model[3]
    assert isinstance(first, nn.Conv2d) and isinstance(second, nn.Conv2d)
    with torch.no_grad():
        x = next(iter(val))[0]
        busiest = torch.relu(first(x)).amax((0, 2, 3)).argsort(descending=True)[:2]
        first.weight[busiest] *= factor
        assert first.bias is not None
        first.bias[busiest] *= factor
        second.weight[:, busiest] /= factor
    return model


def top1(model: nn.Module, data: object) -> float:
    """Top-1 accuracy in percent over (x, y) batches: the `validation_fn` of the accuracy-control examples."""
    return accuracy(model, data)  # type: ignore[arg-type]
