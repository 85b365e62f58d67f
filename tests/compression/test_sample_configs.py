"""Every sample NNCF config that uses sparsity, pruning or distillation builds a compressed model for a
matching small architecture and trains a step."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from squeezer import NNCFConfig, create_compressed_model, register_default_init_args
from squeezer.examples.models import MobileNetV2Tiny, ResidualCNN
from tests.conftest import SPEC_EXAMPLES

SAMPLES = {
    "resnet18_cifar10_accuracy_aware": ResidualCNN,
    "resnet34_cifar_magnitude_sparsity": ResidualCNN,
    "resnet34_imagenet_pruning_geometric_median_kd": ResidualCNN,
    "resnet50_imagenet_pruning_geometric_median": ResidualCNN,
    "resnet50_imagenet_rb_sparsity_int8": ResidualCNN,
    "mobilenet_v2_imagenet_rb_sparsity": MobileNetV2Tiny,
    "mobilenet_v2_imagenet_const_sparsity": MobileNetV2Tiny,
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_sample_config_trains_a_step(name, tmp_path):
    torch.manual_seed(0)
    config = NNCFConfig.from_json(SPEC_EXAMPLES / f"{name}.json")
    config["log_dir"] = str(tmp_path)
    size = config["input_info"]["sample_size"]
    if size[-1] == 224:  # same config, smaller images: the algorithms do not depend on the resolution
        config["input_info"]["sample_size"] = [1, 3, 64, 64]
        size = config["input_info"]["sample_size"]
    data = [(torch.rand(2, *size[1:]), torch.randint(0, 10, (2,))) for _ in range(3)]
    register_default_init_args(config, data)
    model = SAMPLES[name](num_classes=10, in_channels=3) if SAMPLES[name] is ResidualCNN else SAMPLES[name]()
    ctrl, compressed = create_compressed_model(model, config)
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
    stripped = ctrl.strip()
    stripped.eval()
    assert stripped(x).shape == (2, 10)
