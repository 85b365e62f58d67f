"""A torch.export archive becomes a model that trains, switches modes and compresses like the original."""

from __future__ import annotations

import subprocess
import sys

import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from squeezer import NNCFConfig, create_compressed_model, export_onnx
from squeezer.compression import lift_exported_program
from squeezer.examples.models import MLP, DigitsTransformer, MobileNetV2Tiny, ResidualCNN


class RealWorldPatterns(nn.Module):
    """What torchvision/timm models do and our example models do not: in-place Hardswish/SiLU
    (MobileNetV3, EfficientNet), `out += identity` (ResNet), F.scaled_dot_product_attention (ViT)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.hardswish = nn.Hardswish(inplace=True)
        self.silu = nn.SiLU(inplace=True)
        self.qkv = nn.Linear(8, 24)
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.stem(x))
        out = self.silu(self.hardswish(self.bn(self.conv(x))))
        out += x
        tokens = F.hardswish(out).flatten(2).transpose(1, 2)
        q, k, v = self.qkv(tokens).chunk(3, dim=-1)
        return self.head(F.scaled_dot_product_attention(q, k, v).mean(1))


CASES = [
    (ResidualCNN, (1, 1, 32, 32)),
    (MLP, (1, 64)),
    (DigitsTransformer, (1, 64)),
    (MobileNetV2Tiny, (1, 3, 32, 32)),
    (RealWorldPatterns, (1, 3, 8, 8)),
]


def archive_roundtrip(model, shape, tmp_path):
    model.eval()
    example = torch.rand(2, *shape[1:])
    program = torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    torch.export.save(program, tmp_path / "model.pt2")
    return lift_exported_program(torch.export.load(tmp_path / "model.pt2"))


@pytest.mark.parametrize(("cls", "shape"), CASES, ids=[c.__name__ for c, _ in CASES])
def test_lifted_model_matches_the_original_in_both_modes(cls, shape, tmp_path):
    torch.manual_seed(0)
    original = cls()
    lifted = archive_roundtrip(original, shape, tmp_path)
    assert type(lifted).__name__ == cls.__name__
    assert sorted(lifted.state_dict()) == sorted(original.state_dict())
    x = torch.rand(5, *shape[1:])  # another batch size than the example: the batch stays dynamic
    assert not lifted.training
    with torch.no_grad():
        torch.testing.assert_close(lifted(x), original.eval()(x))
    lifted.train()
    original.train()
    torch.manual_seed(1)
    out = lifted(x)
    torch.manual_seed(1)
    torch.testing.assert_close(out, original(x))  # batch statistics and dropout, as in training
    out.sum().backward()
    assert all(p.grad is not None for p in lifted.parameters())


class InPlaceGates(nn.Module):
    """torchvision's in-place Hardswish and SiLU between convs (MobileNetV3, EfficientNet)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.hardswish = nn.Hardswish(inplace=True)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.silu = nn.SiLU(inplace=True)
        self.conv3 = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.silu(self.bn2(self.conv2(self.hardswish(self.bn1(self.conv1(x)))))))


@pytest.mark.parametrize(("cls", "shape"), [(InPlaceGates, (1, 3, 8, 8)), (ResidualCNN, (1, 1, 32, 32))])
def test_onnxruntime_placement_of_a_lifted_model_is_the_originals(cls, shape, tmp_path):
    """onnxruntime's placement writes SiLU / Hardswish out as x * gate(x) and knows a ReLU after a sum
    (QLinearAdd); in a lifted archive the in-place activations are wrapper functions and `torch.relu_`,
    which it must know too (a .pt2 MobileNetV3-small had lost 10 of its QLinearConv kernels: 0.18x FP32
    in onnxruntime, now 0.87x; a lifted ResNet lost its residual sums' quantizers)."""
    torch.manual_seed(0)
    original = cls()
    lifted = archive_roundtrip(original, shape, tmp_path)
    config = {
        "input_info": {"sample_size": list(shape)},
        "target_runtime": "onnxruntime",
        "compression": {"algorithm": "quantization"},
    }
    ctrl_a, _ = create_compressed_model(original, NNCFConfig.from_dict(config), dump_graphs=False)
    ctrl_b, _ = create_compressed_model(lifted, NNCFConfig.from_dict(config), dump_graphs=False)
    ids = [{p.id for p in ctrl.setup.activations} for ctrl in (ctrl_a, ctrl_b)]
    assert ids[1] == ids[0]
    if cls is InPlaceGates:
        assert sum("hardsigmoid" in i for i in ids[1]) == 1 and sum("sigmoid" in i for i in ids[1]) == 2


@pytest.mark.parametrize(("cls", "shape"), CASES, ids=[c.__name__ for c, _ in CASES])
def test_lifted_model_compresses_like_the_original(cls, shape, tmp_path):
    torch.manual_seed(0)
    original = cls()
    lifted = archive_roundtrip(original, shape, tmp_path)
    config = {"input_info": {"sample_size": list(shape)}, "compression": {"algorithm": "quantization"}}
    ctrl_a, _ = create_compressed_model(original, NNCFConfig.from_dict(config), dump_graphs=False)
    ctrl_b, compressed = create_compressed_model(lifted, NNCFConfig.from_dict(config), dump_graphs=False)

    def ids(ctrl):
        return {p.id for p in ctrl.setup.activations} | {w.id for w in ctrl.setup.weights}

    assert ids(ctrl_b) == ids(ctrl_a)  # same scope names, same placement
    compressed.train()
    compressed(torch.rand(4, *shape[1:])).sum().backward()  # in-place ops after quantizers included
    path = ctrl_b.export_model(tmp_path / "m.onnx")  # verified in onnxruntime
    assert path.exists()


def test_lifted_cnn_prunes_physically(tmp_path):
    lifted = archive_roundtrip(ResidualCNN(), (1, 1, 32, 32), tmp_path)
    config = {
        "input_info": {"sample_size": [1, 1, 32, 32]},
        "compression": {
            "algorithm": "filter_pruning",
            "pruning_init": 0.5,
            "params": {"prune_first_conv": True, "prune_downsample_convs": True, "pruning_target": 0.5},
        },
    }
    ctrl, _ = create_compressed_model(lifted, NNCFConfig.from_dict(config), dump_graphs=False)
    stripped = ctrl.strip()
    assert stripped.layer2.conv1.out_channels == 16
    assert stripped(torch.rand(3, 1, 32, 32)).shape == (3, 10)


class TokenModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 16, padding_idx=0)
        self.head = nn.Linear(16, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(ids).mean(1))


def test_lifted_embedding_is_a_layer_with_its_weight_quantized(tmp_path):
    torch.manual_seed(0)
    original = TokenModel().eval()
    ids = torch.randint(0, 50, (2, 7))
    program = torch.export.export(original, (ids,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    lifted = lift_exported_program(program)
    assert isinstance(lifted.embed, nn.Embedding) and lifted.embed.padding_idx == 0
    torch.testing.assert_close(lifted(ids), original(ids))
    config = {"input_info": {"sample_size": [1, 7], "type": "long"}, "compression": {"algorithm": "quantization"}}
    ctrl, _ = create_compressed_model(lifted, NNCFConfig.from_dict(config), dump_graphs=False)
    assert "TokenModel/Embedding[embed]/embedding_0|WEIGHT" in {w.id for w in ctrl.setup.weights}


def test_lifted_constant_tensors_are_kept_out_of_the_state_dict():
    class WithConstant(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x) + torch.tensor([1.0, 2.0, 3.0, 4.0])  # export lifts it as lifted_tensor_0

    original = WithConstant().eval()
    x = torch.rand(2, 4)
    lifted = lift_exported_program(torch.export.export(original, (x,)))
    torch.testing.assert_close(lifted(x), original(x))
    assert sorted(lifted.state_dict()) == sorted(original.state_dict())


def test_class_names_from_an_upload_never_import_other_packages():
    """An archive names its modules' classes; only torch's own are resolved, nothing else is imported
    (import-time code of whatever package an upload names must not run in the job)."""
    code = (
        "import sys\n"
        "from squeezer.compression.graph.lift import _resolve_class\n"
        "import torch\n"
        "assert _resolve_class('torch.nn.modules.conv.Conv2d') is torch.nn.Conv2d\n"
        "assert _resolve_class('this.Zen') == 'this.Zen'\n"  # `import this` would print the Zen of Python
        "assert _resolve_class('transformers.models.bert.modeling_bert.BertModel').endswith('BertModel')\n"
        "print(sorted(m for m in ('this', 'transformers') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"


class BatchSizedOps(nn.Module):
    """ViT's class token `expand(n, -1, -1)` and BERT's `arange` of positions, sized from the input."""

    def __init__(self) -> None:
        super().__init__()
        self.cls = nn.Parameter(torch.randn(1, 1, 4))
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1)
        positions = torch.arange(x.shape[0], dtype=torch.float32).reshape(-1, 1, 1)
        return self.fc(tokens + positions).mean(1)


def test_lifted_ops_sized_by_the_batch_stay_dynamic_in_onnx(tmp_path):
    torch.manual_seed(0)
    original = BatchSizedOps().eval()
    lifted = archive_roundtrip(original, (1, 3, 4), tmp_path)
    x = torch.rand(5, 3, 4)
    # exported at batch 1, checked in onnxruntime at batch 5
    path = export_onnx(lifted, tmp_path / "m.onnx", (x[:1],), verify_inputs=((x,), {}))
    batch = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.HasField("dim_value")  # a named axis, not the export's 1
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(out), lifted(x), rtol=1e-4, atol=1e-5)


class TiedLM(nn.Module):
    """An embedding whose weight is also the output projection (GPT-2's wte / lm_head)."""

    def __init__(self) -> None:
        super().__init__()
        self.wte = nn.Embedding(50, 16)
        self.mix = nn.Linear(16, 16)
        self.lm_head = nn.Linear(16, 50, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, ids):
        return self.lm_head(torch.relu(self.mix(self.wte(ids))))


def test_a_weight_tied_between_an_embedding_and_a_projection_lifts_to_both_ops():
    torch.manual_seed(0)
    model = TiedLM().eval()
    ids = torch.randint(0, 50, (3, 7))
    program = torch.export.export(model, (ids,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    lifted = lift_exported_program(program)
    with torch.no_grad():
        torch.testing.assert_close(lifted(ids), model(ids))
        torch.testing.assert_close(lifted(ids[:1]), model(ids[:1]))
    # still one tensor under two names: training the lifted model keeps the tie
    assert len(list(lifted.parameters())) == len(list(model.parameters())) == 3
