"""A torch.export archive becomes a model that trains, switches modes and compresses like the original."""

from __future__ import annotations

import pytest
import torch

from squeezer import NNCFConfig, create_compressed_model
from squeezer.compression import lift_exported_program
from squeezer.examples.models import MLP, DigitsTransformer, MobileNetV2Tiny, ResidualCNN

CASES = [
    (ResidualCNN, (1, 1, 32, 32)),
    (MLP, (1, 64)),
    (DigitsTransformer, (1, 64)),
    (MobileNetV2Tiny, (1, 3, 32, 32)),
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
