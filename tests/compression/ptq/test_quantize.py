"""Post-training quantization through NNCF 3.x's API (`import squeezer.compression as nncf`), on real data:
scikit-learn's digits, a trained CNN, torchvision's ResNet-18 and the exported files in onnxruntime."""

from __future__ import annotations

import copy

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import squeezer.compression as nncf
from squeezer.errors import CompressionError
from squeezer.examples.digits import accuracy
from squeezer.examples.outliers import top1, trained_plain_cnn, with_outlier_channels


@pytest.fixture(scope="module")
def digits_cnn():
    model, train, val = trained_plain_cnn()
    return model, train, val, accuracy(model, val)


def _calibration(train):
    return nncf.Dataset(train, lambda item: item[0])  # features only: no labels reach quantize


def test_quantize_keeps_accuracy_and_exports_int8_onnx(digits_cnn, tmp_path):
    model, train, val, fp32 = digits_cnn
    before = copy.deepcopy(model.state_dict())
    quantized = nncf.quantize(model, _calibration(train), subset_size=300)

    assert accuracy(quantized, val) >= fp32 - 1.0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the caller's model is untouched
    report = nncf.controller_of(quantized).ptq_report
    assert report.samples >= 300 and report.bias_corrections

    path = nncf.controller_of(quantized).export_model(str(tmp_path / "ptq.onnx"))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x, y = next(iter(val))
    logits = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert (logits.argmax(1) == y.numpy()).mean() * 100 >= fp32 - 3.0
    import onnx

    kinds = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= kinds


def test_fast_bias_correction_brings_outputs_closer_to_fp32(digits_cnn):
    model, train, val, _ = digits_cnn
    x = torch.cat([b[0] for b in val])
    with torch.no_grad():
        reference = model(x)
        errors = {
            fbc: float(
                (nncf.quantize(model, _calibration(train), fast_bias_correction=fbc)(x) - reference).pow(2).mean()
            )
            for fbc in (False, True)
        }
    assert errors[True] < errors[False]


def test_cross_layer_equalization_undoes_outlier_channels(digits_cnn):
    """The same FP32 function with two channels x1000: plain PTQ collapses, equalization restores it."""
    model, train, val, fp32 = digits_cnn
    outliers = with_outlier_channels(model, val)
    assert accuracy(outliers, val) == pytest.approx(fp32, abs=0.3)
    plain = nncf.AdvancedQuantizationParameters(cross_layer_equalization=False)
    assert accuracy(nncf.quantize(outliers, _calibration(train), advanced_parameters=plain), val) < fp32 - 20
    equalized = nncf.quantize(outliers, _calibration(train))
    assert accuracy(equalized, val) >= fp32 - 0.5
    assert nncf.controller_of(equalized).ptq_report.equalized == ["0->3"]


def test_equalization_finds_the_pair_in_an_uploaded_archive_with_in_place_relus(digits_cnn, tmp_path):
    """A `.pt2` archive's ReLU(inplace=True) lifts to `torch.relu_`, which commutes with the scaling too."""
    model, train, val, fp32 = digits_cnn
    outliers = copy.deepcopy(with_outlier_channels(model, val)).eval()
    for module in outliers.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = True
    example = next(iter(val))[0]
    program = torch.export.export(outliers, (example,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    torch.export.save(program, tmp_path / "model.pt2")
    lifted = nncf.lift_exported_program(nncf.load_exported_program(tmp_path / "model.pt2"))
    equalized = nncf.quantize(lifted, _calibration(train))
    assert nncf.controller_of(equalized).ptq_report.equalized == ["0->3"]
    assert accuracy(equalized, val) >= fp32 - 0.5


def test_accuracy_control_meets_a_tight_budget_and_names_the_fp32_layers(digits_cnn):
    model, train, val, fp32 = digits_cnn
    outliers = with_outlier_channels(model, val)
    plain = nncf.AdvancedQuantizationParameters(cross_layer_equalization=False)
    calls = []

    def validate(m, data):
        calls.append(1)
        return top1(m, data)

    quantized = nncf.quantize_with_accuracy_control(
        outliers,
        _calibration(train),
        nncf.Dataset(val, lambda item: item[0]),
        validate,
        max_drop=0.1,
        advanced_quantization_parameters=plain,
    )
    report = nncf.controller_of(quantized).ptq_report.accuracy_control
    assert report["int8_metric"] < fp32 - 20  # plain PTQ misses the budget by far
    assert accuracy(quantized, val) >= fp32 - 0.1
    assert report["drop"] <= 0.1 and report["validations"] == len(calls)
    names = [g["name"] for g in report["fp32_groups"]]
    assert names and "3" in names  # the layer reading the outlier channels goes back to FP32
    assert len(names) < report["ranked_groups"]  # not simply everything
    assert len(calls) <= 2 + 2 * int(np.ceil(np.log2(report["ranked_groups"]))) + 1
    assert all(g["reason"] for g in report["fp32_groups"])


def test_accuracy_control_returns_at_once_when_int8_is_within_budget(digits_cnn):
    model, train, val, _ = digits_cnn
    quantized = nncf.quantize_with_accuracy_control(
        model, _calibration(train), nncf.Dataset(val, lambda item: item[0]), top1, max_drop=5.0
    )
    report = nncf.controller_of(quantized).ptq_report.accuracy_control
    assert report["validations"] == 2 and report["fp32_groups"] == []


def test_quantized_model_fine_tunes_from_its_post_training_ranges(digits_cnn):
    """QAT after PTQ: the quantizer scales are trainable parameters and a training step moves them."""
    model, train, _, _ = digits_cnn
    quantized = nncf.quantize(model, _calibration(train))
    ctrl = nncf.controller_of(quantized)
    scales = {k: q.scale.detach().clone() for k, q in ctrl.non_weight_quantizers.items()}
    optimizer = torch.optim.SGD(quantized.parameters(), lr=0.01)
    quantized.train()
    x, y = next(iter(train))
    loss = F.cross_entropy(quantized(x), y) + ctrl.loss()
    loss.backward()
    optimizer.step()
    assert any(not torch.equal(scales[k], q.scale) for k, q in ctrl.non_weight_quantizers.items())


def test_ignored_scope_keeps_named_layers_fp32(digits_cnn):
    model, train, _, _ = digits_cnn
    quantized = nncf.quantize(model, _calibration(train), ignored_scope=nncf.IgnoredScope(types=["linear"]))
    modules = {wp.module for wp in nncf.controller_of(quantized).setup.weights}
    assert modules == {"0", "3"}
    with pytest.raises(Exception, match="matches"):
        nncf.quantize(model, _calibration(train), ignored_scope=nncf.IgnoredScope(names=["no_such_layer"]))


def test_torchvision_resnet18_quantizes_with_smaller_error_than_min_max():
    """A model we did not write: PTQ's output error is below plain min-max range init's."""
    from squeezer.examples.ptq_check import _batches, fp32_model, relative_error

    model, spec = fp32_model("resnet18", 64)
    calibration, held_out = _batches(spec, 32, 8, seed=1000), _batches(spec, 16, 8, seed=2000)
    plain = nncf.AdvancedQuantizationParameters(
        activations_range_estimator=nncf.RangeEstimator.MINMAX, disable_bias_correction=True
    )
    with torch.no_grad():
        expected = torch.cat([model(x) for x in held_out]).numpy()
        errors = {
            name: relative_error(torch.cat([q(x) for x in held_out]).numpy(), expected)
            for name, q in (
                ("default", nncf.quantize(model, nncf.Dataset(calibration), subset_size=32)),
                ("plain", nncf.quantize(model, nncf.Dataset(calibration), subset_size=32, advanced_parameters=plain)),
            )
        }
    assert errors["default"] < errors["plain"]


def test_same_calibration_data_gives_the_same_model_whatever_the_global_rng():
    """The MSE ranges score a random subsample of each activation; it is drawn from a fixed generator, so
    a user's second run (or a job resumed elsewhere) gets the same INT8 model."""
    from squeezer.examples.ptq_check import _batches, fp32_model

    model, spec = fp32_model("resnet18", 32)
    calibration = _batches(spec, 16, 8, seed=1000)
    states = []
    for seed in (1, 2):
        torch.manual_seed(seed)  # the global RNG differs between the two runs
        states.append(nncf.quantize(model, nncf.Dataset(calibration), subset_size=16).state_dict())
    assert states[0].keys() == states[1].keys()
    differing = [k for k in states[0] if not torch.equal(states[0][k], states[1][k])]
    assert differing == []


# ------------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([torch.rand(4, 1, 8, 8)], "does not run on calibration_dataset item 0 .*\\(4, 1, 8, 8\\)"),
        ([torch.rand(4, 1, 16, 16).double()], "does not run on calibration_dataset item 0 .*float64"),
        ([torch.full((4, 1, 16, 16), float("nan"))], "item 0 holds 1024 NaN or infinite values"),
        ([], "calibration_dataset is empty"),
        (["text"], "is a str"),
    ],
    ids=["shape", "dtype", "nan", "empty", "type"],
)
def test_bad_calibration_data_is_named(digits_cnn, data, message):
    model = digits_cnn[0]
    with pytest.raises(CompressionError, match=message):
        nncf.quantize(model, nncf.Dataset(data))


def test_validation_fn_that_raises_is_named(digits_cnn):
    model, train, val, _ = digits_cnn

    def broken(m, data):
        raise KeyError("labels")

    with pytest.raises(CompressionError, match="validation_fn raised on the FP32 model: KeyError: 'labels'"):
        nncf.quantize_with_accuracy_control(model, _calibration(train), nncf.Dataset(val), broken)
    with pytest.raises(CompressionError, match="must return a number"):
        nncf.quantize_with_accuracy_control(model, _calibration(train), nncf.Dataset(val), lambda m, d: "90%")


def test_model_without_quantizable_layers_is_refused():
    class Scale(nn.Module):
        def forward(self, x):
            return torch.relu(x) * 2

    with pytest.raises(CompressionError, match="Scale has no layer to quantize"):
        nncf.quantize(Scale(), nncf.Dataset([torch.rand(2, 4)]))
