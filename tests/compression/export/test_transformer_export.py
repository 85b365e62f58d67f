"""Transformer layers in the INT8 export: embeddings stored as int8 and gathered before they are dequantized,
Linears on 3-D inputs stored pre-transposed so onnxruntime runs them as integer matmuls, attention masks that
mask nothing dropped; each rewrite leaves onnxruntime's output unchanged."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_digits
from torch import nn

from squeezer import NNCFConfig, create_compressed_model, register_default_init_args
from squeezer.compression.export.mask_rewrite import drop_all_true_masks
from squeezer.compression.export.qdq_rewrite import fold_weight_transposes, gather_before_dequantize

INTEGER_MATMULS = ("MatMulIntegerToFloat", "QLinearMatMul", "DynamicQuantizeMatMul")


class DigitTokens(nn.Module):
    """A digit's 64 pixel intensities (0..16) read as token ids: embedding, a 3-D MLP block, mean, head."""

    def __init__(self, dim: int = 32) -> None:
        super().__init__()
        self.embed = nn.Embedding(17, dim)
        self.up = nn.Linear(dim, 2 * dim)
        self.down = nn.Linear(2 * dim, dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.embed(ids)  # (N, 64, D)
        h = h + self.down(torch.relu(self.up(h)))
        return self.head(h.mean(dim=1))


@pytest.fixture(scope="module")
def digit_tokens() -> tuple[torch.Tensor, torch.Tensor]:
    digits = load_digits()
    return torch.tensor(digits.data, dtype=torch.long), torch.tensor(digits.target, dtype=torch.long)


def _optimized(path, tmp_path) -> onnx.ModelProto:
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return onnx.load(str(tmp_path / "optimized.onnx"))


def test_token_model_exports_int8_embedding_and_integer_matmuls(digit_tokens, tmp_path):
    ids, labels = digit_tokens
    torch.manual_seed(0)
    model = DigitTokens()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for start in range(0, 512, 64):  # a few steps: weights that are not just their random init
        loss = nn.functional.cross_entropy(model(ids[start : start + 64]), labels[start : start + 64])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    config = NNCFConfig.from_dict(
        {"input_info": {"sample_size": [1, 64], "type": "long"}, "compression": {"algorithm": "quantization"}}
    )
    register_default_init_args(config, [(ids[i : i + 64], labels[i : i + 64]) for i in range(0, 256, 64)])
    ctrl, compressed = create_compressed_model(model, config, dump_graphs=False)
    path = ctrl.export_model(tmp_path / "tokens.onnx")  # the export's own parity gate runs here

    graph = onnx.load(str(path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    assert not any(v.dtype == np.float32 and v.size > 64 for v in inits.values())  # the table is int8 too
    gathered = [inits[n.input[0]] for n in graph.node if n.op_type == "Gather" and n.input[0] in inits]
    tables = [t for t in gathered if t.ndim == 2]  # (the per-row steps are gathered beside the rows)
    assert [(t.dtype, t.shape) for t in tables] == [(np.int8, (17, 32))]  # the Gather reads the int8 table
    for node in [n for n in graph.node if n.op_type == "MatMul"]:  # the weight's dequantize feeds it directly
        weight = producer[node.input[1]]
        assert weight.op_type == "DequantizeLinear" and inits[weight.input[0]].dtype == np.int8

    ops = Counter(n.op_type for n in _optimized(path, tmp_path).graph.node)
    assert sum(ops[op] for op in INTEGER_MATMULS) == 2 and ops["MatMul"] == 0  # up and down, in integer

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    held_out = ids[-256:]
    with torch.no_grad():
        expected = compressed.eval()(held_out).numpy()
    actual = session.run(None, {session.get_inputs()[0].name: held_out.numpy()})[0]
    assert np.abs(actual - expected).max() <= 0.02 * np.abs(expected).max()
    assert (actual.argmax(1) == expected.argmax(1)).mean() >= 0.98
    # OpenVINO converts the same file (int8 rows gathered, then scaled) and its gate checks parity on its CPU plugin
    assert ctrl.export_model(tmp_path / "tokens.xml", save_format="openvino").with_suffix(".bin").exists()


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def _embedding_graph(scale: np.ndarray, zero_point: np.ndarray, axis: int) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    table = rng.integers(-127, 128, size=(20, 6)).astype(np.int8)
    dq = helper.make_node("DequantizeLinear", ["table", "scale", "zp"], ["real"], axis=axis)
    gather = helper.make_node("Gather", ["real", "ids"], ["out"])
    graph = helper.make_graph(
        [dq, gather],
        "embedding",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [None, None])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, None, 6])],
        [
            numpy_helper.from_array(table, "table"),
            numpy_helper.from_array(scale.astype(np.float32), "scale"),
            numpy_helper.from_array(zero_point.astype(np.int8), "zp"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize(
    ("scale", "zero_point", "axis", "rewritten"),
    [
        (np.linspace(0.01, 0.2, 20), np.zeros(20), 0, True),  # per row, symmetric (NNCF's embedding grid)
        (np.linspace(0.01, 0.2, 6), np.zeros(6), 1, True),  # per column
        (np.array(0.05), np.array(3), 1, True),  # per tensor, with a zero point
        (np.linspace(0.01, 0.2, 20), np.arange(20) - 10, 0, False),  # per row with zero points: left alone
    ],
)
def test_embedding_rows_are_gathered_before_dequantizing(scale, zero_point, axis, rewritten):
    model = _embedding_graph(scale, zero_point, axis)
    feeds = {"ids": np.array([[0, 19, 7, 7], [3, 2, 1, 0]], dtype=np.int64)}
    before = _run(model, feeds)
    assert gather_before_dequantize(model) == int(rewritten)
    onnx.checker.check_model(model)
    gathers = [n for n in model.graph.node if n.op_type == "Gather"]
    assert (gathers[0].input[0] == "table") == rewritten  # the int8 table is read directly
    if rewritten:  # nothing dequantizes the whole table any more
        assert all(n.input[0] != "table" for n in model.graph.node if n.op_type == "DequantizeLinear")
    np.testing.assert_allclose(_run(model, feeds), before, rtol=1e-6, atol=0)


def test_position_rows_are_not_gathered_before_dequantizing():
    """Ids computed from the input's shape (position ids) are constants to OpenVINO, whose CPU plugin
    failed on a constant int8 embedding; only ids that are the input's data are rewritten."""
    model = _embedding_graph(np.linspace(0.01, 0.2, 20), np.zeros(20), 0)
    graph = model.graph
    graph.node[1].input[1] = "positions"
    graph.node.extend(
        [
            helper.make_node("Shape", ["ids"], ["shape"]),
            helper.make_node("Gather", ["shape", "one"], ["length"]),
            helper.make_node("Range", ["zero", "length", "one"], ["positions"]),
        ]
    )
    graph.initializer.extend([numpy_helper.from_array(np.array(v, np.int64), n) for n, v in (("zero", 0), ("one", 1))])
    sorted_nodes = [graph.node[0], *graph.node[2:], graph.node[1]]  # the Gather of rows last
    del graph.node[:]
    graph.node.extend(sorted_nodes)
    graph.output[0].type.tensor_type.shape.dim.pop(0)
    onnx.checker.check_model(model)
    assert gather_before_dequantize(model) == 0


def test_transposed_weight_is_stored_transposed():
    rng = np.random.default_rng(0)
    weight = rng.integers(-127, 128, size=(5, 3)).astype(np.int8)  # (out, in), as nn.Linear keeps it
    nodes = [
        helper.make_node("DequantizeLinear", ["w", "w_scale", "w_zp"], ["w_real"], axis=0),
        helper.make_node("Transpose", ["w_real"], ["w_t"], perm=[1, 0]),
        helper.make_node("MatMul", ["x", "w_t"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4, 5])],
        [
            numpy_helper.from_array(weight, "w"),
            numpy_helper.from_array(np.linspace(0.01, 0.05, 5).astype(np.float32), "w_scale"),
            numpy_helper.from_array(np.zeros(5, np.int8), "w_zp"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    feeds = {"x": rng.standard_normal((2, 4, 3)).astype(np.float32)}
    before = _run(model, feeds)
    assert fold_weight_transposes(model) == 1
    onnx.checker.check_model(model)
    assert [n.op_type for n in model.graph.node] == ["DequantizeLinear", "MatMul"]
    dq = model.graph.node[0]
    assert numpy_helper.to_array(model.graph.initializer[0]).shape == (3, 5)
    assert next(a.i for a in dq.attribute if a.name == "axis") == 1  # the output channels are now columns
    np.testing.assert_allclose(_run(model, feeds), before, rtol=1e-6, atol=0)


def _masked_attention_graph(mask: np.ndarray) -> onnx.ModelProto:
    """What torch's exporter writes for scaled_dot_product_attention with a Boolean mask."""
    nodes = [
        helper.make_node("MatMul", ["q", "k"], ["scores"]),
        helper.make_node("Shape", ["scores"], ["shape"]),
        helper.make_node("Expand", ["mask", "shape"], ["full_mask"]),
        helper.make_node("Where", ["full_mask", "zero", "minus_inf"], ["bias"]),
        helper.make_node("Add", ["scores", "bias"], ["masked"]),
        helper.make_node("Softmax", ["masked"], ["p"], axis=-1),
        helper.make_node("IsNaN", ["p"], ["nan"]),
        helper.make_node("Where", ["nan", "zero", "p"], ["p_safe"]),
        helper.make_node("MatMul", ["p_safe", "v"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "attention",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None, 2, 4, 4]) for n in ("q", "k", "v")],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, 2, 4, 4])],
        [
            numpy_helper.from_array(mask, "mask"),
            numpy_helper.from_array(np.array([0.0], np.float32), "zero"),
            numpy_helper.from_array(np.array([-np.inf], np.float32), "minus_inf"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])


@pytest.mark.parametrize("masks_something", [False, True])
def test_attention_masks_that_mask_nothing_are_dropped(masks_something):
    mask = np.ones((1, 1, 4, 1), dtype=bool)
    mask[0, 0, 2, 0] = not masks_something  # a fully masked row: the NaN guard matters there
    model = _masked_attention_graph(mask)
    rng = np.random.default_rng(0)
    feeds = {n: rng.standard_normal((3, 2, 4, 4)).astype(np.float32) for n in ("q", "k", "v")}
    before = _run(model, feeds)
    assert drop_all_true_masks(model) == int(not masks_something)
    onnx.checker.check_model(model)
    ops = [n.op_type for n in model.graph.node]
    if masks_something:
        assert ops.count("Where") == 2 and "IsNaN" in ops
    else:
        assert ops == ["MatMul", "Softmax", "MatMul"]
    np.testing.assert_allclose(_run(model, feeds), before, rtol=1e-6, atol=0)


class SdpaAttention(nn.Module):
    """Multi-head self-attention through F.scaled_dot_product_attention, as timm and Hugging Face write it."""

    def __init__(
        self, scale: float | None = None, causal: bool = False, masked: bool = False, additive: bool = False
    ) -> None:
        super().__init__()
        self.qkv, self.proj = nn.Linear(16, 48), nn.Linear(16, 16)
        self.scale, self.causal, self.masked, self.additive = scale, causal, masked, additive

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, 2, 8).permute(2, 0, 3, 1, 4)
        mask = (x[:, None, None, :, 0] > -1.5) if self.masked else None  # (b, 1, 1, n) bool
        if self.additive:  # Hugging Face's form: 0 where attended, a large negative number elsewhere
            mask = (x[:, None, None, :, 0] <= -1.5).float() * torch.finfo(torch.float32).min
        out = nn.functional.scaled_dot_product_attention(q, k, v, mask, scale=self.scale, is_causal=self.causal)
        return self.proj(out.transpose(1, 2).reshape(b, n, 16))


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"scale": 0.2}, {"causal": True}, {"masked": True}, {"additive": True}],
    ids=["default", "scale", "causal", "mask", "additive"],
)
def test_attention_scale_is_a_constant_applied_once(kwargs, tmp_path):
    """torch's ONNX form computes 1/sqrt(head size) from the query's shape on every run (Shape, Slice, Cast,
    Sqrt, Div) and multiplies the query and the transposed key each by its square root; the export writes
    it as a constant when the head size is known and, but for a causal mask (torch's form), applies it
    once, to the query, so that the key's Transpose feeds the MatMul (OpenVINO folds it in). Parity with
    torch is checked by the export itself, in onnxruntime."""
    from squeezer.compression.export.onnx_export import export_onnx

    torch.manual_seed(0)
    model = SdpaAttention(**kwargs).eval()
    path = export_onnx(model, tmp_path / "attention.onnx", (torch.randn(2, 5, 16),))
    ops = Counter(n.op_type for n in onnx.load(str(path)).graph.node)
    assert ops["Softmax"] == 1 and ops["Sqrt"] == 0
    assert ops["Slice"] == (2 if kwargs.get("causal") else 0)  # the causal mask is cut to the sequence length
    if not kwargs.get("causal"):
        graph = onnx.load(str(path)).graph
        producer = {out: n for n in graph.node for out in n.output}
        kinds = {out: n.op_type for out, n in producer.items()}
        (scores,) = [n for n in graph.node if n.op_type == "MatMul" and kinds.get(n.input[1]) == "Transpose"]
        assert kinds[scores.input[0]] == "Mul" and ops["Mul"] == 1 + kwargs.get("additive", False)


def test_attention_output_reaches_the_projection_through_one_quantizer(tmp_path):
    """The attention output is quantized once, before the heads' transpose and reshape: onnxruntime still
    runs every matmul as an integer kernel (its QDQ propagation carries the dequantization through both),
    and OpenVINO no longer dequantizes the reshaped int8 tensor to quantize it again before the projection."""
    from squeezer.compression.export.openvino_import import import_openvino
    from squeezer.examples.models import AttentionBlock

    torch.manual_seed(0)
    config = NNCFConfig.from_dict(
        {
            "input_info": {"sample_size": [2, 8, 32]},
            "model_type": "transformer",
            "compression": {"algorithm": "quantization"},
        }
    )
    register_default_init_args(config, [(torch.randn(4, 8, 32), torch.zeros(4))], criterion=nn.MSELoss())
    ctrl, _ = create_compressed_model(AttentionBlock(), config, dump_graphs=False)
    path = ctrl.export_model(tmp_path / "attention.onnx")  # parity with torch checked in onnxruntime

    graph = onnx.load(str(path)).graph
    producer = {out: n for n in graph.node for out in n.output}
    node = producer[next(n for n in graph.node if n.op_type == "MatMul" and "proj" in n.name).input[0]]
    passed = []
    while node.op_type in ("Transpose", "Reshape", "DequantizeLinear", "QuantizeLinear"):
        passed.append(node.op_type)
        node = producer[node.input[0]]
    assert node.op_type == "MatMul"  # attention @ values
    assert passed == ["Reshape", "Transpose", "DequantizeLinear", "QuantizeLinear"]

    ops = Counter(n.op_type for n in _optimized(path, tmp_path).graph.node)
    assert sum(ops[k] for k in INTEGER_MATMULS) == 6  # qkv, both attention matmuls, proj and the MLP's two

    compiled = import_openvino().Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    layer = {op: op.get_rt_info()["layerType"].astype(str) for op in compiled.get_runtime_model().get_ordered_ops()}
    requantized = [  # FakeQuantize <- Convert <- Reshape: an int8 tensor made float to be quantized again
        op
        for op, kind in layer.items()
        if kind == "FakeQuantize"
        and layer[(convert := op.input(0).get_source_output().get_node())] == "Convert"
        and layer[convert.input(0).get_source_output().get_node()] == "Reshape"
    ]
    assert requantized == []
