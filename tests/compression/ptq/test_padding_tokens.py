"""Transformers calibrate on their real tokens: padding rows (attention_mask 0) are computed but read by
nothing, and at 128 tokens they are most of MiniLM's calibration rows; left in, they set the ranges.
Transformers also skip fast bias correction."""

from __future__ import annotations

import torch
from torch import nn

import squeezer.compression as nncf
from squeezer.compression.ptq.tokens import real_rows, token_mask
from squeezer.compression.ptq.types import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters


class PaddedEncoder(nn.Module):
    """Two Linears over (batch, tokens, channels), outputs zeroed where the mask is 0 (as pooling does)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 8)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x))) * attention_mask.unsqueeze(-1)


def _batches(padding_scale: float) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    out = []
    for _ in range(4):
        x = torch.randn(4, 12, 8, generator=generator)
        mask = torch.ones(4, 12, dtype=torch.long)
        mask[:, 6:] = 0
        x[:, 6:] *= padding_scale  # padding rows far outside the real ones
        out.append({"x": x, "attention_mask": mask})
    return out


def _input_range(model_type):
    no_smoothing = AdvancedQuantizationParameters(smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=-1))
    q = nncf.quantize(
        PaddedEncoder(), nncf.Dataset(_batches(100.0)), model_type=model_type, advanced_parameters=no_smoothing
    )
    ctrl = nncf.controller_of(q)
    step, _, qmin, qmax = ctrl.non_weight_quantizers["/nncf_model_input_0|OUTPUT"].qparams()  # fc1's input
    return float(step.max() * (qmax - qmin)), q


def test_transformer_ranges_come_from_the_real_tokens():
    real = torch.cat([b["x"][:, :6] for b in _batches(100.0)])
    width, quantized = _input_range(nncf.ModelType.TRANSFORMER)
    assert width <= 1.01 * float(real.max() - real.min())  # the padding rows (x100) did not widen it
    wide, plain = _input_range(None)  # without the transformer rules every row counts
    assert wide > 20 * width
    # and no bias correction for transformers (on MiniLM it cost more than it restored)
    assert not nncf.controller_of(quantized).ptq_report.bias_corrections
    assert nncf.controller_of(plain).ptq_report.bias_corrections

    # and the real tokens' outputs stay close to FP32 (padding rows are clipped, and read by nothing)
    batch = _batches(100.0)[0]
    with torch.no_grad():
        reference = PaddedEncoder()(**batch)
        error = (quantized(**batch) - reference).abs().max() / reference.abs().max()
    assert error < 0.05


def test_real_rows_keep_the_masked_tokens_of_token_shaped_tensors_only():
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    x = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4)
    with token_mask({"attention_mask": mask}):
        assert real_rows(x).shape == (3, 4)
        assert torch.equal(real_rows(x), x[mask.bool()])
        heads = torch.zeros(2, 5, 3, 4)  # attention laid out per head: not (batch, tokens, channels)
        assert real_rows(heads).shape == (2 * 5 * 3, 4)
    assert real_rows(x).shape == (6, 4)  # outside a batch: every row
    with token_mask({"attention_mask": torch.ones(2, 3)}):
        assert real_rows(x).shape == (6, 4)  # nothing masked
    with token_mask({"attention_mask": mask}, enabled=False):
        assert real_rows(x).shape == (6, 4)
