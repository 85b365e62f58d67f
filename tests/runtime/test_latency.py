"""Latency of an exported model in onnxruntime and OpenVINO (real runtimes, tiny model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from squeezer import NNCFConfig, create_compressed_model, register_default_init_args
from squeezer.runtime import RUNTIMES, LatencyResult, UnknownRuntimeError, load_runner, measure_latency, summarize


@pytest.fixture(scope="module")
def int8_onnx(tmp_path_factory):
    """A tiny conv net through Squeezer's INT8 export: QDQ ONNX, as users get it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 4)).eval()
    config = NNCFConfig.from_dict(
        {
            "input_info": {"sample_size": [1, 3, 8, 8]},
            "compression": {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 4}}},
        }
    )
    data = [(torch.rand(2, 3, 8, 8), torch.zeros(2, dtype=torch.long)) for _ in range(2)]
    register_default_init_args(config, data, criterion=nn.CrossEntropyLoss())
    ctrl, _ = create_compressed_model(model, config, dump_graphs=False)
    path = tmp_path_factory.mktemp("runtime") / "tiny.onnx"
    ctrl.export_model(str(path))
    return path


def _inputs(path):
    import onnx

    name = onnx.load(str(path)).graph.input[0].name
    return {name: np.random.default_rng(0).random((1, 3, 8, 8), dtype=np.float32)}


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_measures_positive_latency_in_each_runtime(int8_onnx, runtime):
    result = measure_latency(int8_onnx, _inputs(int8_onnx), runtime=runtime, threads=1, warmup=1, repeats=5)
    assert isinstance(result, LatencyResult)
    assert result.runtime == runtime and result.threads == 1
    assert result.runs == 5
    assert 0 < result.median_ms <= result.p90_ms


def test_both_runtimes_compute_the_same_outputs(int8_onnx):
    inputs = _inputs(int8_onnx)
    ort_out = np.asarray(load_runner(int8_onnx, "onnxruntime")(inputs)[0])
    ov_out = np.asarray(next(iter(load_runner(int8_onnx, "openvino")(inputs).values())))
    assert ort_out.shape == ov_out.shape == (1, 4)
    np.testing.assert_allclose(ov_out, ort_out, atol=0.05 * float(np.abs(ort_out).max()) + 1e-3)


def test_unknown_runtime_names_the_allowed_ones(int8_onnx):
    with pytest.raises(UnknownRuntimeError, match=r"unknown runtime 'tensorrt'; use one of onnxruntime, openvino"):
        measure_latency(int8_onnx, _inputs(int8_onnx), runtime="tensorrt")


def test_wrong_input_names_are_reported(int8_onnx):
    with pytest.raises(ValueError, match=r"missing \['.+'\], not inputs of the model \['pixels'\]"):
        measure_latency(int8_onnx, {"pixels": np.zeros((1, 3, 8, 8), np.float32)}, repeats=1)


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="no ONNX file at"):
        load_runner(tmp_path / "absent.onnx", "openvino")


def test_summary_takes_median_and_nearest_rank_p90():
    result = summarize([float(v) for v in range(1, 11)], "onnxruntime")
    assert (result.median_ms, result.p90_ms, result.runs) == (5.5, 9.0, 10)
