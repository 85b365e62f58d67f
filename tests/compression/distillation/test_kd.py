"""Knowledge distillation: loss formulas, teacher isolation, eval behaviour, strip."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from squeezer import CompressionStage, NNCFConfig, create_compressed_model
from squeezer.examples.models import MLP


def build(section):
    config = NNCFConfig.from_dict(
        {
            "input_info": {"sample_size": [1, 64]},
            "compression": [{"algorithm": "magnitude_sparsity", "sparsity_init": 0.5}, section],
        }
    )
    teacher = MLP()
    ctrl, model = create_compressed_model(teacher, config, dump_graphs=False)
    kd = next(c for c in ctrl.children if c.name == "knowledge_distillation")
    return ctrl, kd, model, teacher


def test_softmax_loss_matches_formula():
    torch.manual_seed(0)
    ctrl, kd, model, teacher = build(
        {"algorithm": "knowledge_distillation", "type": "softmax", "temperature": 2.0, "scale": 0.5}
    )
    x = torch.rand(6, 64)
    model.train()
    student = model(x)
    with torch.no_grad():
        t = teacher.eval()(x)
    expected = 0.5 * 4.0 * -(F.log_softmax(student / 2, 1) * F.softmax(t / 2, 1)).sum(1).mean()
    torch.testing.assert_close(kd.loss(), expected)
    assert kd.loss().item() == 0.0  # consumed: the next call before a forward is zero


def test_mse_loss_and_composite_sum():
    torch.manual_seed(0)
    ctrl, kd, model, teacher = build({"algorithm": "knowledge_distillation", "type": "mse"})
    x = torch.rand(6, 64)
    model.train()
    student = model(x)
    with torch.no_grad():
        expected = F.mse_loss(student, teacher.eval()(x))
    total = ctrl.loss()  # magnitude sparsity adds 0
    torch.testing.assert_close(total, expected)
    total.backward()
    assert model.fc1.parametrizations.weight.original.grad is not None


def test_teacher_never_leaks_into_the_student():
    ctrl, kd, model, teacher = build({"algorithm": "knowledge_distillation", "type": "softmax"})
    n_student = len(list(model.parameters()))
    assert n_student == len({id(p) for p in model.parameters()})
    assert not {id(p) for p in kd.teacher.parameters()} & {id(p) for p in model.parameters()}
    assert all(not p.requires_grad for p in kd.teacher.parameters())
    assert set(model.state_dict()) == {k for k in model.state_dict() if "teacher" not in k}
    assert len(model.state_dict()) == len(MLP().state_dict()) + 3  # + one mask per sparsified layer
    model.eval()
    model(torch.rand(2, 64))
    assert kd.loss().item() == 0.0  # eval forwards do not run the teacher
    assert kd.compression_stage() == CompressionStage.FULLY_COMPRESSED


def test_strip_removes_the_teacher_hook():
    ctrl, kd, model, _ = build({"algorithm": "knowledge_distillation", "type": "softmax"})
    stripped = ctrl.strip()
    assert len(stripped._forward_hooks) == 0
    assert len(model._forward_hooks) == 1


def test_temperature_with_mse_is_a_config_error():
    from squeezer import ConfigError

    with pytest.raises(ConfigError, match="temperature is only allowed with type 'softmax'"):
        build({"algorithm": "knowledge_distillation", "type": "mse", "temperature": 2})
