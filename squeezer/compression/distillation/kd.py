"""Knowledge distillation: the uncompressed model teaches the compressed one.

The teacher is a frozen copy of the model as the user passed it, kept by the controller and not
registered in the student: it is not in `state_dict()` or `parameters()`, checkpoints stay
loadable without it, and optimizers never see it. It runs in eval mode (NNCF runs it in train
mode, so its BatchNorm statistics drift and its dropout is active: an NNCF quirk, not copied).
"""

from __future__ import annotations

import copy
import weakref
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from squeezer.compression.build import BuildContext
from squeezer.compression.config.models import KnowledgeDistillationConfig
from squeezer.compression.controller import CompressionController, CompressionStage
from squeezer.compression.init_args import flatten_tensors
from squeezer.compression.registry import name_of, register_algorithm


class _DistillationHook:
    """Forward hook on the student; holds the controller weakly so model copies don't drag it along."""

    def __init__(self, ctrl: KnowledgeDistillationController) -> None:
        self.ctrl = weakref.ref(ctrl)

    def __call__(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        ctrl = self.ctrl()
        if ctrl is not None and module.training:
            ctrl.record(args, kwargs, output)


class KnowledgeDistillationController(CompressionController):
    name = name_of(KnowledgeDistillationConfig)

    def __init__(
        self, model: nn.Module, ctx: BuildContext, section: KnowledgeDistillationConfig, teacher: nn.Module
    ) -> None:
        super().__init__(model, ctx)
        self.kind = section.type
        self.scale = section.scale
        self.temperature = section.temperature or 1.0
        self.teacher = teacher
        self._loss: torch.Tensor | None = None
        self._handle = model.register_forward_hook(_DistillationHook(self), with_kwargs=True)

    def record(self, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        with torch.no_grad():
            teacher_out = self.teacher(*args, **kwargs)
        pairs = [
            (s, t)
            for s, t in zip(flatten_tensors(output), flatten_tensors(teacher_out), strict=False)
            if s.requires_grad
        ]
        losses = [self._pair_loss(s, t) for s, t in pairs]
        self._loss = torch.stack(losses).sum() if losses else None

    def _pair_loss(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        if self.kind == "mse":
            if student.dim() < 2:
                return student.new_zeros(())
            return self.scale * F.mse_loss(student, teacher)
        if student.dim() != 2:
            return student.new_zeros(())
        t = self.temperature
        soft_ce = -(F.log_softmax(student / t, dim=1) * F.softmax(teacher / t, dim=1)).sum(1).mean()
        return self.scale * soft_ce * t * t

    def loss(self) -> torch.Tensor:
        """The distillation loss of the last training forward (zero before any)."""
        loss, self._loss = self._loss, None
        return loss if loss is not None else super().loss()

    def compression_stage(self) -> CompressionStage:
        return CompressionStage.FULLY_COMPRESSED

    def strip_model(self, model: nn.Module) -> nn.Module:
        for key, hook in list(model._forward_hooks.items()):
            if isinstance(hook, _DistillationHook):
                del model._forward_hooks[key]
                model._forward_hooks_with_kwargs.pop(key, None)
        return model


@register_algorithm(KnowledgeDistillationConfig)
def build_knowledge_distillation(
    ctx: BuildContext, section: KnowledgeDistillationConfig
) -> KnowledgeDistillationController:
    assert ctx.original is not None, "create_compressed_model passes the user's model"
    teacher = copy.deepcopy(ctx.original).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    teacher.to(ctx.device())
    return KnowledgeDistillationController(ctx.model, ctx, section, teacher)
