"""Every sample config shipped in `squeezer/compression/config/samples/` builds a compressed model for the small
architecture it was written for, trains a step, strips and exports; AutoQ, which is not supported, fails
with a clear error instead."""

from __future__ import annotations

import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

from squeezer import NNCFConfig, create_compressed_model, register_default_init_args
from squeezer.compression.config.samples import sample_config_names, sample_config_path
from squeezer.errors import ConfigError
from squeezer.examples.models import MobileNetV2Tiny, ResidualCNN

UNSUPPORTED = {"mixed_precision_autoq": "autoq"}
HAWQ = {"mixed_precision_hawq", "int4_int8_hawq"}


RGB = {"const_sparsity", "filter_pruning", "filter_pruning_adaptive", "filter_pruning_kd", "int8_asymmetric"}
RGB |= {"magnitude_sparsity", "rb_sparsity", "rb_sparsity_int8"}


def _model_for(name: str, channels: int) -> torch.nn.Module:
    if name in {"rb_sparsity", "const_sparsity"}:
        return MobileNetV2Tiny(num_classes=10, in_channels=channels)
    return ResidualCNN(num_classes=10, in_channels=channels)


def test_samples_fit_any_input_shape():
    """No sample fixes `input_info`: the inputs come from the model (the service), the data or example_input."""
    for name in sample_config_names():
        assert "input_info" not in NNCFConfig.from_json(sample_config_path(name)), name


def _train_functions():
    def train_steps_fn(loader, model, optimizer, ctrl, steps):
        model.train()
        for step, (x, y) in enumerate(loader):
            if step == steps:
                break
            loss = F.cross_entropy(model(x), y) + ctrl.loss()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    def validate_fn(model, loader):
        model.eval()
        with torch.no_grad():
            x, y = next(iter(loader))
            return float((model(x).argmax(1) == y).float().mean())

    return train_steps_fn, validate_fn


def test_every_sample_is_covered():
    assert len(sample_config_names()) == 18
    with pytest.raises(FileNotFoundError, match="the samples are: const_sparsity"):
        sample_config_path("resnet50_int8")


@pytest.mark.parametrize("name", sample_config_names())
def test_sample_config_trains_a_step_and_exports(name, tmp_path):
    torch.manual_seed(0)
    config = NNCFConfig.from_json(sample_config_path(name))
    config["log_dir"] = str(tmp_path)
    channels = 3 if name in RGB else 1
    data = [(torch.rand(4, channels, 32, 32), torch.randint(0, 10, (4,))) for _ in range(3)]
    if name == "filter_pruning_learned_ranking":  # the search's shape, not its size
        config["compression"][0]["params"]["legr_params"].update(
            generations=2, population_size=2, num_samples=1, train_steps=1
        )
    if name in HAWQ:  # the search's shape, not its precision
        config["compression"]["initializer"]["precision"]["iter_number"] = 2
    train_steps_fn, validate_fn = _train_functions()
    register_default_init_args(
        config,
        data,
        criterion=torch.nn.CrossEntropyLoss(),
        train_steps_fn=train_steps_fn,
        validate_fn=validate_fn,
        val_loader=data,
    )
    model = _model_for(name, channels)
    if name in UNSUPPORTED:
        with pytest.raises(ConfigError, match=UNSUPPORTED[name]):
            create_compressed_model(model, config, dump_graphs=False)
        return
    ctrl, compressed = create_compressed_model(model, config, dump_graphs=False)
    if name == "int8_ignored_scopes":
        weights = {p.id for p in ctrl.setup.weights}
        assert not any("stem" in w or "Linear[fc]" in w for w in weights) and weights
    if name == "mixed_precision_manual":
        bits = {p.id: p.spec.num_bits for p in ctrl.setup.weights}
        assert sorted(b for b in bits.values() if b == 4) == [4, 4] and 8 in bits.values()
    if name in HAWQ:
        bits = {p.id: p.spec.num_bits for p in ctrl.setup.weights}
        assert set(bits.values()) == {4, 8}
        assert ctrl.statistics().mixed_precision["compression_ratio"] >= 1.5
    optimizer = torch.optim.SGD(compressed.parameters(), lr=0.01)
    ctrl.scheduler.epoch_step()
    compressed.train()
    x, y = data[0]
    ctrl.scheduler.step()
    loss = F.cross_entropy(compressed(x), y) + ctrl.loss()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert ctrl.statistics().to_dict()  # every algorithm reports
    compressed.eval()
    ctrl.export_model(str(tmp_path / "model.onnx"))
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x[:1].numpy()})
    assert out.shape == (1, 10)
