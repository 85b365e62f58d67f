"""GPTQ rounding keeps the weights on the quantizer's grid and brings X W^T closer to FP32 than rounding
each weight to its nearest level, on inputs with outlier channels (what SmoothQuant leaves behind)."""

from __future__ import annotations

import torch

from squeezer.compression.ptq.gptq import gptq_round


def test_gptq_rounding_is_on_the_grid_and_beats_nearest_rounding():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2048, 96, generator=generator)
    x[:, :4] *= 20  # a few large channels, correlated with the rest
    x[:, 4:8] += 0.5 * x[:, :4]
    w = torch.randn(48, 96, generator=generator) * 0.05
    step = w.abs().amax(1, keepdim=True) / 127
    nearest = (w / step).round().clamp(-127, 127) * step
    rounded = gptq_round(w, step, -127, 127, x.double().T @ x.double())

    levels = rounded / step
    assert torch.allclose(levels, levels.round(), atol=1e-4) and levels.abs().max() <= 127 + 1e-4
    reference = x @ w.T
    error = lambda q: float((x @ q.T - reference).pow(2).mean())  # noqa: E731
    assert error(rounded) < 0.5 * error(nearest)


def test_always_zero_inputs_do_not_break_the_inverse():
    x = torch.randn(256, 16, generator=torch.Generator().manual_seed(1))
    x[:, 3] = 0.0
    w = torch.randn(8, 16, generator=torch.Generator().manual_seed(2))
    step = w.abs().amax(1, keepdim=True) / 127
    rounded = gptq_round(w, step, -127, 127, x.double().T @ x.double())
    assert torch.isfinite(rounded).all() and bool((rounded[:, 3] == 0).all())
