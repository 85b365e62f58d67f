"""Modules that branch on `self.training` inside `forward` (timm's BatchNormAct2d, DropPath): a model
compressed while in train mode must still compute its inference branch after `.eval()`."""

from __future__ import annotations

import onnx
import torch
from timm.layers import BatchNormAct2d, DropPath
from torch import nn

from squeezer import NNCFConfig, create_compressed_model


class TimmBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = BatchNormAct2d(8, act_layer=nn.ReLU6)  # BN + activation in one module, as timm builds it
        self.drop_path = DropPath(0.5)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        x = x + self.drop_path(x)
        return self.head(x.mean((2, 3)))


def int8():
    return NNCFConfig.from_dict(
        {
            "input_info": {"sample_size": [1, 3, 8, 8]},
            "compression": {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 0}}},
        }
    )


def test_model_compressed_in_train_mode_infers_like_the_original(tmp_path):
    torch.manual_seed(0)
    model = TimmBlock().train()  # a freshly built model is in train mode
    with torch.no_grad():
        model(torch.randn(16, 3, 8, 8))  # BN statistics of its own
    ctrl, compressed = create_compressed_model(model, int8(), dump_graphs=False)
    assert compressed.training and model.training  # modes are left as they were
    bn = compressed.get_submodule("bn")
    assert isinstance(bn, BatchNormAct2d)  # one leaf op: it still switches with train()/eval()

    compressed.train()
    before = bn.running_mean.clone()
    compressed(torch.randn(4, 3, 8, 8)).sum().backward()
    assert not torch.equal(bn.running_mean, before)  # training updates BN statistics

    compressed.eval()
    model.eval()
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        batch, single = compressed(x), compressed(x[:1])
        # before: BN normalized with the batch's statistics and DropPath dropped at inference, so an
        # input's output depended on its batch (3.6 on random EfficientNet-Lite0) and on chance
        torch.testing.assert_close(batch[:1], single, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(compressed(x), batch)
    path = ctrl.export_model(tmp_path / "m.onnx")  # verified in onnxruntime against the torch model
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    # BatchNormAct2d's normalization is folded into the conv (onnxruntime can then fuse it), its
    # activation stays: Clip is ReLU6
    assert "BatchNormalization" not in ops and "Clip" in ops


def test_per_module_modes_survive_compression():
    model = TimmBlock().train()
    model.bn.eval()  # a user's frozen BatchNorm
    _, compressed = create_compressed_model(model, int8(), dump_graphs=False)  # traced in eval mode
    assert compressed.training and not compressed.get_submodule("bn").training
    assert compressed.get_submodule("conv").training
