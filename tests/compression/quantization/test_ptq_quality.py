"""Range initialization matches onnxruntime's min-max PTQ: after range init and before any training, the
INT8 error of small zoo CNNs is within 1.5x of `quantize_static`'s on the same calibration data, at the
same weight precision (7-bit with the default overflow_fix, 8-bit without)."""

from __future__ import annotations

import logging

import pytest

from squeezer.examples.ptq_check import measure

pytest.importorskip("torchvision", reason="the zoo extra provides the models")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mobilenet_v3_small"])
def test_range_init_error_is_within_1_5x_of_onnxruntime_ptq(name, caplog):
    caplog.set_level(logging.ERROR)  # onnxruntime's quantizer logs pre-processing advice per file
    r = measure(name, size=64, calibration_samples=32, seeds=1)
    # MobileNetV3-small was 0.69 vs 0.02 (33x) while activation ranges were floored at 0.1
    assert r.ratio_7bit <= 1.5, r
    assert r.ratio_8bit <= 1.5, r
    assert abs(r.squeezer_torch - r.squeezer_onnx) <= 0.5 * r.squeezer_onnx, r  # the export keeps it
