"""Quantizer numerics against NNCF's formulas."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from squeezer.compression.quantization.quantizer import FakeQuantizer, QuantizerSpec, level_bounds, tune_range


@pytest.mark.parametrize(
    ("spec", "signed", "levels"),
    [
        (QuantizerSpec(), True, (-128, 127)),
        (QuantizerSpec(), False, (0, 255)),
        (QuantizerSpec(mode="asymmetric"), True, (0, 255)),
        (QuantizerSpec(is_weights=True, narrow_range=True), True, (-127, 127)),
        (QuantizerSpec(is_weights=True, narrow_range=True), False, (0, 254)),
        (QuantizerSpec(is_weights=True, half_range=True), True, (-64, 63)),
        (QuantizerSpec(num_bits=4), True, (-8, 7)),
    ],
)
def test_level_table(spec, signed, levels):
    assert level_bounds(spec, signed) == levels


def spec_formula(x, lo, rng, levels):
    """Q(x, lo, rng, levels), NNCF's quantization formula."""
    s = (levels - 1) / rng
    zp = torch.round(-lo * s)
    xc = torch.minimum(torch.maximum(x, lo), lo + rng)
    return torch.round((xc - lo) * s - zp) / s


def test_symmetric_forward_matches_spec():
    q = FakeQuantizer(QuantizerSpec(signedness_to_force=True))
    with torch.no_grad():
        q.scale.fill_(2.5)
    x = torch.linspace(-4, 4, 1001)
    lo = torch.tensor(2.5 * -128 / 127)
    assert_close(q(x), spec_formula(x, lo, 2.5 - lo, 256), atol=1e-6, rtol=0)
    # 8-bit signed activation shortcut of NNCF's formula: round(clamp(x*127/scale, -128, 127)) * scale / 127
    assert_close(q(x), torch.clamp(torch.round(x * 127 / 2.5), -128, 127) * 2.5 / 127, atol=1e-6, rtol=0)


def test_half_range_weights_step_is_scale_over_63():
    q = FakeQuantizer(QuantizerSpec(is_weights=True, half_range=True, signedness_to_force=True))
    with torch.no_grad():
        q.scale.fill_(0.63)
    x = torch.tensor([-1.0, -0.0149, 0.0151, 0.3, 1.0])
    assert_close(q(x), torch.tensor([-0.64, -0.01, 0.02, 0.3, 0.63]), atol=1e-6, rtol=0)


def test_per_channel_weights():
    q = FakeQuantizer(
        QuantizerSpec(
            is_weights=True, narrow_range=True, signedness_to_force=True, per_channel=True, scale_shape=(2, 1)
        )
    )
    with torch.no_grad():
        q.scale.copy_(torch.tensor([[1.0], [0.1]]))
    w = torch.tensor([[0.5, 2.0], [0.05, -0.2]])
    out = q(w)
    assert_close(out[0], torch.tensor([0.5, 1.0]), atol=1e-2, rtol=0)
    assert_close(out[1], torch.tensor([0.05, -0.1]), atol=1e-3, rtol=0)


def test_asymmetric_forward_matches_spec_with_tune_range():
    q = FakeQuantizer(QuantizerSpec(mode="asymmetric"))
    with torch.no_grad():
        q.input_low.fill_(-0.37)
        q.input_range.fill_(2.0)
    lo, rng = tune_range(q.input_low.detach(), q.input_range.detach() + 1e-16, 256)
    x = torch.linspace(-1, 2, 999)
    assert_close(q(x), spec_formula(x, lo, rng, 256), atol=1e-6, rtol=0)
    # zero is exactly representable after TuneRange
    assert q(torch.zeros(1)).item() == 0.0


def test_straight_through_gradients():
    q = FakeQuantizer(QuantizerSpec(signedness_to_force=True))
    with torch.no_grad():
        q.scale.fill_(1.0)
    x = torch.tensor([-2.0, -0.5, 0.3, 0.99, 1.5], requires_grad=True)
    q(x).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]
    # scale gradient: 1 above, level_low/level_high below, (out - x)/scale inside
    out = torch.clamp(torch.round(x.detach() * 127), -128, 127) / 127
    inside = (out - x.detach())[1:4].sum()
    assert_close(q.scale.grad, (1.0 + -128 / 127 + inside).reshape(1), atol=1e-5, rtol=0)


def test_asymmetric_gradients_follow_nncf():
    q = FakeQuantizer(QuantizerSpec(mode="asymmetric"))
    with torch.no_grad():
        q.input_low.fill_(0.0)
        q.input_range.fill_(1.0)
    x = torch.tensor([-0.5, 0.2, 0.5001, 3.0], requires_grad=True)
    q(x).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 0.0]
    assert_close(q.input_low.grad, torch.tensor([2.0]))  # one per value outside
    with torch.no_grad():
        out = q(x)
    expected_range = 1.0 + float(((out - x.detach())[1:3]).sum())  # 1 above, 0 below, (out-x)/rng inside
    assert_close(q.input_range.grad, torch.tensor([expected_range]), atol=1e-5, rtol=0)


def test_disabled_quantizer_is_identity():
    q = FakeQuantizer(QuantizerSpec())
    q.set_enabled(False)
    x = torch.randn(10)
    assert torch.equal(q(x), x)
    assert not q.scale.requires_grad


def test_compression_lr_multiplier_scales_gradients():
    plain = FakeQuantizer(QuantizerSpec(signedness_to_force=True))
    scaled = FakeQuantizer(QuantizerSpec(signedness_to_force=True, compression_lr_multiplier=10.0))
    x = torch.tensor([0.3, 2.0])
    plain(x).sum().backward()
    scaled(x).sum().backward()
    assert_close(scaled.scale.grad, plain.scale.grad * 10)


def test_logarithm_scale_state_and_forward():
    q = FakeQuantizer(QuantizerSpec(signedness_to_force=True, logarithm_scale=True))
    q.apply_minmax(torch.tensor([-3.0]), torch.tensor([3.0]), lower_bound=0.1)
    assert_close(q.scale.exp(), torch.tensor([3.0]))
    assert_close(q(torch.tensor([3.0])), torch.tensor([3.0]))


@pytest.mark.parametrize(
    "spec",
    [
        QuantizerSpec(signedness_to_force=True),  # the per-tensor CPU kernel
        QuantizerSpec(signedness_to_force=True, per_channel=True, scale_shape=(1, 3, 1, 1)),
        QuantizerSpec(mode="asymmetric"),
    ],
    ids=["symmetric-per-tensor", "symmetric-per-channel", "asymmetric"],
)
@pytest.mark.parametrize(
    "inplace_op",
    [lambda t: t.relu_(), lambda t: torch.nn.functional.hardswish(t, inplace=True), lambda t: t.add_(1.0)],
    ids=["relu_", "hardswish_", "add_"],
)
def test_inplace_op_after_quantizer_keeps_gradients(spec, inplace_op):
    """Real models write into a quantized tensor (ReLU(inplace=True), `out += identity`) before backward."""
    torch.manual_seed(0)
    q = FakeQuantizer(spec)
    x = torch.randn(2, 3, 4, 4) * 2

    def grads(op):
        q.zero_grad()
        xx = x.clone().requires_grad_(True)
        (op(q(xx)) * torch.arange(xx.numel()).reshape(xx.shape)).sum().backward()
        return xx.grad, [p.grad.clone() for p in q.parameters()]

    reference = grads(lambda t: inplace_op(t.clone()))  # the same op on a copy: nothing saved is modified
    grad_x, grad_params = grads(inplace_op)
    assert_close(grad_x, reference[0])
    for got, expected in zip(grad_params, reference[1], strict=True):
        assert_close(got, expected)


def test_inplace_op_on_the_quantizer_input_still_fails_loudly():
    """Only the quantizer's own output may be modified: a changed input would give wrong gradients."""
    q = FakeQuantizer(QuantizerSpec(signedness_to_force=True))
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    hidden = x * 2
    out = q(hidden)
    hidden.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()
