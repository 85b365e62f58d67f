"""HAWQ mixed precision: bits follow the measured Hessian-trace sensitivity, the compression-ratio
constraint holds (checked with MACs counted here), the INT4/INT8 model runs in onnxruntime, and
AutoQ is refused with a clear error."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn

from squeezer import NNCFConfig, create_compressed_model, register_default_init_args
from squeezer.compression.quantization.precision.assignment import LayerCandidate, assign_bits
from squeezer.compression.quantization.precision.hessian import MIN_PROBES, average_hessian_traces
from squeezer.compression.quantization.precision.int4_onnx import pack_int4_weights
from squeezer.errors import CompressionError, ConfigError
from squeezer.examples.digits import train_epoch
from squeezer.examples.models import ResidualCNN

GAIN = 10.0  # the output of branch `b` is amplified before the head: the loss curves GAIN^2 more along it


class Branches(nn.Module):
    """stem -> three equal branches (a, b, c) summed -> head; `b` is amplified, so it is the sensitive one."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(64, 32)
        self.a, self.b, self.c = nn.Linear(32, 32), nn.Linear(32, 32), nn.Linear(32, 32)
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.stem(x))
        return self.head(F.relu(self.a(h)) + GAIN * F.relu(self.b(h)) + F.relu(self.c(h)))


def _id(name: str) -> str:
    return f"Branches/Linear[{name}]/linear_0|WEIGHT"


@pytest.fixture(scope="module")
def branches(digits_flat):
    torch.manual_seed(0)
    model = Branches()
    train_epoch(model, digits_flat[0], torch.optim.SGD(model.parameters(), lr=0.01))
    return model


def _hawq(model, loader, tmp_path, size, **precision):
    config = NNCFConfig.from_dict(
        {
            "input_info": {"sample_size": size},
            "log_dir": str(tmp_path),
            "compression": {
                "algorithm": "quantization",
                "initializer": {
                    "range": {"num_init_samples": 64},
                    "precision": {"type": "hawq", "num_data_points": 64, "iter_number": 24, **precision},
                },
            },
        }
    )
    register_default_init_args(config, loader, criterion=nn.CrossEntropyLoss())
    return create_compressed_model(model, config, dump_graphs=False)


def _bits(ctrl) -> dict[str, int]:
    return {wp.id: wp.spec.num_bits for wp in ctrl.setup.weights}


def _linear_ratio(model: nn.Module, bits: dict[str, int]) -> float:
    """The all-8-bit over the mixed bit complexity, a Linear layer doing in x out MACs per sample."""
    macs = {_id(n): m.in_features * m.out_features for n, m in model.named_children() if isinstance(m, nn.Linear)}
    return sum(8 * v for v in macs.values()) / sum(bits[k] * v for k, v in macs.items())


def test_the_amplified_branch_is_measured_most_sensitive_and_keeps_8_bits(branches, digits_flat, tmp_path):
    ctrl, _ = _hawq(branches, digits_flat[0], tmp_path, [1, 64], compression_ratio=1.2, dump_init_precision_data=True)
    bits = _bits(ctrl)
    dump = json.loads((tmp_path / "hawq_precision_init.json").read_text())
    layers = {layer["id"]: layer for layer in dump["layers"]}
    trace = {k: layer["hessian_trace"] for k, layer in layers.items()}
    assert trace[_id("b")] > 20 * max(abs(trace[_id("a")]), abs(trace[_id("c")]))  # the construction worked
    assert bits[_id("b")] == 8 and bits[_id("a")] == bits[_id("c")] == 4
    # the equal-size branches cost the same: whichever went to 4 bits loses less than any kept at 8
    branch = [_id(n) for n in "abc"]
    delta = {k: layers[k]["sensitivity"]["4"] - layers[k]["sensitivity"]["8"] for k in branch}
    lowered = [delta[k] for k in branch if bits[k] == 4]
    kept = [delta[k] for k in branch if bits[k] == 8]
    assert max(lowered) <= min(kept)
    assert max(trace[k] for k in branch if bits[k] == 4) < min(trace[k] for k in branch if bits[k] == 8)
    stats = ctrl.statistics().to_dict()
    assert stats["mixed_precision"]["weight_bits"] == bits
    assert stats["quantization"]["weight_quantizers"]["4_bits"] == 2
    assert all(q.spec.num_bits == 8 for q in ctrl.non_weight_quantizers.values())  # activations stay 8-bit


def test_ratio_constraint_holds_and_a_tighter_ratio_lowers_more_layers(branches, digits_flat, tmp_path):
    _hawq(branches, digits_flat[0], tmp_path, [1, 64], dump_init_precision_data=True)
    traces = str(tmp_path / "hawq_precision_init.json")  # the same sensitivities for every ratio
    fours = []
    for ratio in (1.0, 1.2, 1.5, 1.8, 2.0):
        ctrl, _ = _hawq(branches, digits_flat[0], tmp_path / str(ratio), [1, 64], compression_ratio=ratio,
                        traces_per_layer_path=traces)  # fmt: skip
        bits = _bits(ctrl)
        achieved = _linear_ratio(branches, bits)
        assert achieved >= ratio - 1e-9
        assert ctrl.statistics().mixed_precision["compression_ratio"] == pytest.approx(achieved)
        fours.append(sum(b == 4 for b in bits.values()))
    assert fours[0] == 0 and fours[-1] == 5
    assert fours == sorted(fours) and len(set(fours)) >= 3


def test_cnn_ratio_counts_conv_macs(digits32, tmp_path):
    torch.manual_seed(0)
    model = ResidualCNN(width=8)
    macs: dict[str, int] = {}

    def count(name):
        def hook(module, inputs, output):
            k = int(np.prod(module.kernel_size)) if isinstance(module, nn.Conv2d) else 1
            c_in = module.in_channels // module.groups if isinstance(module, nn.Conv2d) else module.in_features
            c_out = module.out_channels if isinstance(module, nn.Conv2d) else module.out_features
            spatial = int(np.prod(output.shape[2:])) if output.dim() > 2 else 1
            macs[name] = c_out * c_in * k * spatial

        return hook

    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.register_forward_hook(count(name))
    model.eval()
    model(torch.zeros(1, 1, 32, 32))
    x, y = next(iter(digits32[0]))
    loader = [(x[:16], y[:16])]
    ctrl, _ = _hawq(model, loader, tmp_path, [1, 1, 32, 32], compression_ratio=1.5, iter_number=4, num_data_points=16)
    by_module = {wp.module: wp.spec.num_bits for wp in ctrl.setup.weights}
    assert set(by_module) == set(macs)
    achieved = sum(8 * v for v in macs.values()) / sum(by_module[k] * v for k, v in macs.items())
    assert achieved >= 1.5 and 4 in by_module.values() and 8 in by_module.values()
    assert ctrl.statistics().mixed_precision["compression_ratio"] == pytest.approx(achieved)


def test_mixed_int4_int8_export_runs_in_onnxruntime(branches, digits_flat, tmp_path):
    ctrl, model = _hawq(branches, digits_flat[0], tmp_path, [1, 64], compression_ratio=1.5)
    bits = _bits(ctrl)
    assert sorted(set(bits.values())) == [4, 8]
    path = tmp_path / "mixed.onnx"
    ctrl.export_model(str(path))  # the export's own onnxruntime parity gate runs here
    graph = onnx.load(str(path)).graph
    weights = {i.name: numpy_helper.to_array(i) for i in graph.initializer if i.name.endswith("weight_quantized")}
    for name, b in bits.items():
        layer = name.split("[")[1].split("]")[0]
        q = weights[f"{layer}.weight_quantized"]
        assert q.dtype == np.int8
        span = int(q.max()) - int(q.min())
        assert (span <= 15) if b == 4 else (span > 15), (layer, b, span)  # 4-bit values: levels -8..7
    x, _ = next(iter(digits_flat[1]))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (actual,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    model.eval()
    with torch.no_grad():
        expected = model(x).numpy()
    assert np.abs(actual - expected).max() <= 0.05 * np.abs(expected).max()
    assert (actual.argmax(1) == expected.argmax(1)).mean() > 0.95
    packed_path = tmp_path / "mixed_int4.onnx"  # the optional INT4 storage of the same file
    assert pack_int4_weights(path, packed_path) == sum(b == 4 for b in bits.values())
    packed = onnx.load(str(packed_path))
    assert sum(i.data_type == onnx.TensorProto.INT4 for i in packed.graph.initializer) >= 2
    assert packed_path.stat().st_size < path.stat().st_size
    int4_session = ort.InferenceSession(str(packed_path), providers=["CPUExecutionProvider"])
    (unpacked,) = int4_session.run(None, {int4_session.get_inputs()[0].name: x.numpy()})
    assert np.abs(unpacked - actual).max() <= 0.05 * np.abs(expected).max()


def test_resume_keeps_the_chosen_bits_without_data(branches, digits_flat, tmp_path):
    ctrl, _ = _hawq(branches, digits_flat[0], tmp_path, [1, 64], compression_ratio=1.5)
    state = json.loads(json.dumps(ctrl.get_compression_state()))
    config = NNCFConfig.from_dict(
        {
            "input_info": {"sample_size": [1, 64]},
            "compression": {"algorithm": "quantization", "initializer": {"precision": {"type": "hawq"}}},
        }
    )
    resumed, _ = create_compressed_model(branches, config, compression_state=state, dump_graphs=False)
    assert _bits(resumed) == _bits(ctrl)
    assert resumed.statistics().to_dict()["mixed_precision"] == ctrl.statistics().to_dict()["mixed_precision"]


def test_hawq_needs_a_criterion(branches, digits_flat):
    config = NNCFConfig.from_dict(
        {
            "input_info": {"sample_size": [1, 64]},
            "compression": {"algorithm": "quantization", "initializer": {"precision": {"type": "hawq"}}},
        }
    )
    register_default_init_args(config, digits_flat[0])
    with pytest.raises(CompressionError, match=r"criterion=\.\.\."):
        create_compressed_model(branches, config, dump_graphs=False)


def test_unreachable_ratio_names_the_path(branches, digits_flat, tmp_path):
    with pytest.raises(ConfigError, match=r"precision\.compression_ratio: compression ratio 2\.5 is out of reach.*2"):
        _hawq(branches, digits_flat[0], tmp_path, [1, 64], compression_ratio=2.5, iter_number=1)


def test_autoq_is_refused_naming_what_is_allowed(branches):
    config = NNCFConfig.from_dict(
        {
            "input_info": {"sample_size": [1, 64]},
            "compression": {"algorithm": "quantization", "initializer": {"precision": {"type": "autoq"}}},
        }
    )
    with pytest.raises(ConfigError, match=r"initializer\.precision\.type: .*'autoq'.*not supported.*'hawq'.*'manual'"):
        create_compressed_model(branches, config, dump_graphs=False)


def test_assignment_is_exact_where_greedy_is_not():
    """Saving 8 units: lowering the one big layer (loss 10) beats the greedy loss-per-saved-bit
    order, which takes the cheap small layer first (loss 1 per 4 saved) and then still needs the big one."""
    layers = [
        LayerCandidate("big", 2, 1.0, {4: 10.0, 8: 0.0}),
        LayerCandidate("small", 1, 1.0, {4: 1.0, 8: 0.0}),
        LayerCandidate("other", 1, 1.0, {4: 9.5, 8: 0.0}),
    ]
    # all 8: 32 bit-units; ratio 32 / 24 needs 8 units saved: {big} (10) or {small, other} (10.5)
    assert assign_bits(layers, 32 / 24) == {"big": 4, "small": 8, "other": 8}


@pytest.mark.slow  # 800 Hessian-vector products: about 10 s on an idle core
def test_hutchinson_matches_the_exact_hessian_trace(digits_flat):
    """On a net small enough for the full Hessian, each layer's estimate is its diagonal block's trace
    divided by its weight count (the average trace HAWQ ranks by). The probes are seeded, so the
    check is deterministic; the head's 60-weight block has large off-diagonal terms, hence the
    wider margin there (Hutchinson's variance is twice the squared off-diagonal mass)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 6), nn.Tanh(), nn.Linear(6, 10))
    x, y = next(iter(digits_flat[0]))
    weights = {"first": net[0].weight, "second": net[2].weight}
    estimate = average_hessian_traces(net, weights, [((x,), {}, y)], F.cross_entropy, iter_number=400, tolerance=0)

    def loss_of(w1, w2):
        return F.cross_entropy(F.linear(torch.tanh(F.linear(x, w1, net[0].bias)), w2, net[2].bias), y)

    blocks = torch.autograd.functional.hessian(
        loss_of, (net[0].weight.detach(), net[2].weight.detach()), vectorize=True
    )
    exact = {}
    for k, name in enumerate(weights):
        n = weights[name].numel()
        exact[name] = float(torch.diagonal(blocks[k][k].reshape(n, n)).sum()) / n
    assert estimate.traces["first"] == pytest.approx(exact["first"], rel=0.1)
    assert estimate.traces["second"] == pytest.approx(exact["second"], rel=0.3)
    assert estimate.probes_per_batch == [400] and estimate.samples == len(x)
    loose = average_hessian_traces(net, weights, [((x,), {}, y)], F.cross_entropy, iter_number=400, tolerance=1.0)
    assert loose.probes_per_batch == [MIN_PROBES]  # converged as soon as allowed
