"""The job's latency report (runtime/compare.py) on real files in real runtimes: a warning exactly where
the 'compressed' file is slower, a bounded measurement, and a protocol that refuses impossible timings."""

from __future__ import annotations

import pydantic
import pytest
import torch
from torch import nn

from squeezer import export_onnx
from squeezer.runtime import RUNTIMES
from squeezer.runtime.compare import job_latency, measure
from squeezer.worker.sandbox.protocol import DoneMessage


def _mlp(hidden):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 10))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A small and a large FP32 MLP (about 300x the work) as ONNX: one is surely slower than the other."""
    root = tmp_path_factory.mktemp("latency")
    x = torch.rand(1, 64)
    small = export_onnx(_mlp(8).eval(), root / "small.onnx", (x,), verify=False)
    large = export_onnx(_mlp(1024).eval(), root / "large.onnx", (x,), verify=False)
    return small, large, {"input.0": torch.rand(8, 64).numpy()}


def test_a_slower_compressed_file_is_reported_in_every_runtime(files):
    small, large, inputs = files
    report, warnings = measure(small, large, inputs)  # "compressed" = the large one: slower
    assert set(report) == set(RUNTIMES)
    for timing in report.values():
        assert timing["speedup"] < 1 and timing["batch_size"] == 8 and timing["runs"] >= 1
        assert timing["speedup"] == pytest.approx(timing["fp32_ms"] / timing["compressed_ms"])
    assert len(warnings) == len(RUNTIMES)
    assert all(
        f"not faster than FP32 in {r} on this worker's CPU" in w for r, w in zip(RUNTIMES, warnings, strict=True)
    )
    assert "for a batch of 8" in warnings[0]

    report, warnings = measure(large, small, inputs)  # the other way round: faster, nothing to say
    assert all(timing["speedup"] > 1 for timing in report.values()) and warnings == []


def test_the_measurement_is_bounded(files):
    small, large, inputs = files
    report, _ = measure(small, large, inputs, budget_s=1e-6)  # no time: one timed pair each
    assert all(timing["runs"] == 1 for timing in report.values())
    report, _ = measure(small, small, inputs, runtimes=("onnxruntime",), max_runs=5)
    assert set(report) == {"onnxruntime"} and report["onnxruntime"]["runs"] == 5


def test_job_latency_exports_the_fp32_model_and_removes_it(files, tmp_path):
    _, large, _ = files
    model = _mlp(8).eval()
    report, warnings = job_latency(model, large, torch.rand(4, 64), tmp_path)
    assert report["onnxruntime"]["speedup"] < 1 and len(warnings) == len(RUNTIMES)
    assert list(tmp_path.iterdir()) == []  # the FP32 file was only for timing


def test_the_job_process_cannot_report_impossible_timings():
    timing = {"fp32_ms": 1.0, "compressed_ms": 2.0, "speedup": 0.5, "batch_size": 8, "runs": 3}
    done = DoneMessage(status="succeeded", uncompressed_metric=1.0, latency={"openvino": timing})
    assert done.latency["openvino"].speedup == 0.5
    for bad in ({"speedup": float("nan")}, {"fp32_ms": 0.0}, {"compressed_ms": -1.0}, {"runs": 0}):
        with pytest.raises(pydantic.ValidationError):
            DoneMessage(status="succeeded", uncompressed_metric=1.0, latency={"onnxruntime": {**timing, **bad}})
    with pytest.raises(pydantic.ValidationError, match="tensorrt"):
        DoneMessage(status="succeeded", uncompressed_metric=1.0, latency={"tensorrt": timing})


def test_a_runtime_that_cannot_run_the_file_keeps_the_others_figures(tmp_path):
    """onnxruntime runs its own contrib op com.microsoft::Inverse and OpenVINO cannot compile it: the
    report keeps onnxruntime's timing and says why OpenVINO's is missing (it used to lose both)."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Inverse", ["x"], ["y"], domain="com.microsoft")],
        "inverse",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    )
    onnx.save(model, tmp_path / "inverse.onnx")
    inputs = {"x": (torch.eye(4) * 2).numpy()}
    report, warnings = measure(tmp_path / "inverse.onnx", tmp_path / "inverse.onnx", inputs, max_runs=3)
    assert set(report) == {"onnxruntime"} and report["onnxruntime"]["runs"] >= 1
    # the same file twice may also be reported "not faster"; only the missing runtime matters here
    missing = [w for w in warnings if w.startswith("latency not measured")]
    assert len(missing) == 1 and missing[0].startswith("latency not measured in openvino: RuntimeError")


def test_a_file_slower_in_onnxruntime_with_openvinos_placement_names_the_config_key():
    """The default placement is NNCF's (what OpenVINO fuses); in onnxruntime it can be far slower than FP32
    (a post-training MobileNetV3-small: 0.13x), and the job's warnings say how to get onnxruntime's."""
    import squeezer.compression as nncf
    from squeezer.worker.runner import _placement_hint

    batches = [torch.rand(8, 64) for _ in range(2)]
    for runtime, speedup, hinted in (
        (None, 0.13, True),
        ("onnxruntime", 0.13, False),  # already onnxruntime's placement: nothing to suggest
        (None, 1.5, False),  # faster: nothing to say
    ):
        advanced = nncf.AdvancedQuantizationParameters(target_runtime=runtime)
        quantized = nncf.quantize(_mlp(16), nncf.Dataset(batches), subset_size=16, advanced_parameters=advanced)
        warnings: list[str] = []
        _placement_hint(nncf.controller_of(quantized), {"onnxruntime": {"speedup": speedup}}, warnings)
        assert bool(warnings) is hinted
        assert not warnings or '"target_runtime": "onnxruntime"' in warnings[0]
    warnings = []
    _placement_hint(nncf.controller_of(quantized), {}, warnings)  # no onnxruntime figures: no hint
    assert warnings == []
    config = nncf.NNCFConfig.from_dict(
        {"input_info": {"sample_size": [1, 64]}, "compression": {"algorithm": "magnitude_sparsity"}}
    )
    sparse, _ = nncf.create_compressed_model(_mlp(16), config, dump_graphs=False)
    _placement_hint(sparse, {"onnxruntime": {"speedup": 0.5}}, warnings)  # no quantizers: nothing to place
    assert warnings == []
