"""Filter pruning builder and controller."""

from __future__ import annotations

import logging
import math
from typing import Any, cast

import torch
from torch import nn
from torch.nn.utils import parametrize

from squeezer.compression.build import BuildContext
from squeezer.compression.config.models import FilterPruningConfig
from squeezer.compression.controller import CompressionController, CompressionStage, Statistics
from squeezer.compression.graph.surgery import fold_parametrizations, original_weight
from squeezer.compression.init_args import LeGRInitArgs
from squeezer.compression.pruning.channel_group import NORMS, ChannelGroup, Member, SkippedLayers, is_conv1d, out_axis
from squeezer.compression.pruning.check import check_groups
from squeezer.compression.pruning.flops import layer_flops, weighted
from squeezer.compression.pruning.groups import find_groups
from squeezer.compression.pruning.importance import filter_importance, keep_count_uniform
from squeezer.compression.pruning.legr import learn_ranking, load_ranking, save_ranking
from squeezer.compression.pruning.masks import FilterMask
from squeezer.compression.pruning.removal import remove_channels
from squeezer.compression.pruning.schedulers import PruningScheduler
from squeezer.compression.registry import name_of, register_algorithm
from squeezer.compression.targets import scoped_layers
from squeezer.errors import CompressionError

logger = logging.getLogger(__name__)


def _attach(module: nn.Module, name: str, axis: int) -> FilterMask:
    t = cast(torch.Tensor, getattr(module, name))
    mask = FilterMask(t.shape[axis], axis, t.dim()).to(t.device)
    parametrize.register_parametrization(module, name, mask)
    return mask


class FilterPruningController(CompressionController):
    name = name_of(FilterPruningConfig)

    def __init__(
        self,
        model: nn.Module,
        ctx: BuildContext,
        section: FilterPruningConfig,
        groups: list[ChannelGroup],
        layer_flops: dict[str, int],
        skipped: list[SkippedLayers] | None = None,
    ) -> None:
        super().__init__(model, ctx)
        params = section.params
        self.params = params
        self.groups = groups
        self.skipped = skipped or []  # layers left whole, with the reason (statistics and log)
        self.layer_flops = layer_flops  # per output channel x input channel unit, see _flops
        self.importance = params.filter_importance
        self.all_weights = bool(params.all_weights)
        self.flops_target = params.pruning_flops_target
        self.frozen = False
        self.level = 0.0
        self.ranking: dict[int, tuple[float, float]] | None = None  # LeGR coefficients per group
        self.learned_ranking = params.interlayer_ranking_type == "learned_ranking"
        self.masks: dict[int, list[tuple[Member, FilterMask]]] = {}
        for group in groups:
            masks = []
            for member in group.producers:
                module = model.get_submodule(member.name)
                masks.append((member, _attach(module, "weight", out_axis(module))))
                if getattr(module, "bias", None) is not None:
                    masks.append((member, _attach(module, "bias", 0)))
            if params.prune_batch_norms:
                for member in group.norms:
                    norm = model.get_submodule(member.name)
                    if getattr(norm, "weight", None) is not None:
                        masks += [(member, _attach(norm, "weight", 0)), (member, _attach(norm, "bias", 0))]
            self.masks[group.id] = masks
        target = (
            self.flops_target
            if self.flops_target
            else (params.pruning_target if params.pruning_target is not None else 0.5)
        )
        self._scheduler = PruningScheduler(self, params, section.pruning_init, target)
        if ctx.should_init:
            self.set_pruning_level(section.pruning_init)

    # ----------------------------------------------------------------------------- masks
    def group_mask(self, group: ChannelGroup) -> torch.Tensor:
        """The group's 0/1 mask over its `n` channels, read back from the layers' mask buffers."""
        mask = torch.ones(group.n)
        for member, fm in self.masks.get(group.id, []):
            mask[member.roots] = fm.mask.detach().cpu()[member.idxs]
        return mask

    def _importances(self, normalize: bool) -> dict[int, torch.Tensor]:
        result = {}
        for group in self.groups:
            total = torch.zeros(group.n)
            for member in group.producers:
                module = self.model.get_submodule(member.name)
                imp = filter_importance(original_weight(module), out_axis(module), self.importance, normalize).cpu()
                total[member.roots] += imp[member.idxs]
            result[group.id] = total
        return result

    def _masks_for_level(self, level: float) -> dict[int, torch.Tensor]:
        masks: dict[int, torch.Tensor] = {}
        importances = self._importances(normalize=self.all_weights)
        if self.all_weights:
            flat = torch.cat(list(importances.values())) if importances else torch.zeros(0)
            if flat.numel() == 0:
                return masks
            threshold = flat.sort().values[min(int(level * flat.numel()), flat.numel() - 1)]
            for gid, imp in importances.items():
                mask = (imp >= threshold).float() if level > 0 else torch.ones_like(imp)
                if not mask.any():  # never remove a whole group
                    mask[imp.argmax()] = 1.0
                masks[gid] = mask
            return masks
        for group in self.groups:
            imp = importances[group.id]
            n_pruned = group.n - keep_count_uniform(group.n, level)
            mask = torch.ones(group.n)
            if n_pruned > 0:
                mask[imp.argsort()[:n_pruned]] = 0.0
            masks[group.id] = mask
        return masks

    def _apply(self, masks: dict[int, torch.Tensor]) -> None:
        for gid, mask in masks.items():
            for member, fm in self.masks[gid]:
                fm.set_mask(member.keep_mask(mask, fm.mask.numel()).to(fm.mask.device))

    def set_pruning_level(self, level: float) -> None:
        """Uniform: the same share pruned in every group (kept filters rounded up to a multiple of 8);
        `all_weights`: one threshold over normalized importances; FLOPs target: the smallest uniform
        level whose remaining FLOPs reach the target."""
        if not 0.0 <= level < 1.0:
            raise ValueError(f"pruning level must be in [0, 1), got {level}")
        self.level = level
        if self.frozen:
            return
        if self.flops_target and level > 0:
            self._apply(self._masks_for_flops(level))
        else:
            self._apply(self._masks_for_level(level))

    def _masks_for_flops(self, flops_share: float) -> dict[int, torch.Tensor]:
        full = self.flops(None)
        goal = full * (1 - flops_share)
        if self.all_weights:
            return self._global_masks_for_flops(goal)
        lo, hi = 0.0, 0.999
        if self.flops(self._masks_for_level(hi)) > goal:
            raise CompressionError(
                f"pruning_flops_target {flops_share} cannot be reached: pruning every "
                f"group to one filter leaves {self.flops(self._masks_for_level(hi)) / full:.2%}"
            )
        while hi - lo > 0.01:
            mid = (lo + hi) / 2
            if self.flops(self._masks_for_level(mid)) <= goal:
                hi = mid
            else:
                lo = mid
        return self._masks_for_level(hi)

    def _global_masks_for_flops(self, goal: float) -> dict[int, torch.Tensor]:
        """One ranking over all groups' filters (LeGR-transformed when learned); the least important
        go first, at most 90% of any group, until the FLOPs reach `goal` (binary search on the count)."""
        importances = self._importances(normalize=not self.learned_ranking)
        order: list[tuple[float, int, int]] = []
        for group in self.groups:
            a, b = (self.ranking or {}).get(group.id, (1.0, 0.0))
            scores = (a * importances[group.id] + b).tolist()
            ranked = sorted(range(group.n), key=scores.__getitem__)[: int(0.9 * group.n)]
            order += [(scores[i], group.id, i) for i in ranked]
        order.sort()

        def masks_after(k: int) -> dict[int, torch.Tensor]:
            masks = {g.id: torch.ones(g.n) for g in self.groups}
            for _, gid, i in order[:k]:
                masks[gid][i] = 0.0
            return masks

        lo, hi = 0, len(order)
        if self.flops(masks_after(hi)) > goal:
            raise CompressionError("the FLOPs target cannot be reached with at most 90% of each group pruned")
        while lo < hi:
            mid = (lo + hi) // 2
            if self.flops(masks_after(mid)) <= goal:
                hi = mid
            else:
                lo = mid + 1
        return masks_after(lo)

    def freeze(self, frozen: bool = True) -> None:
        self.frozen = frozen

    # ----------------------------------------------------------------------------- size
    def _channels(self, masks: dict[int, torch.Tensor] | None) -> tuple[dict[str, int], dict[str, int]]:
        """(output channels, input channels) per prunable layer under `masks` (None: unpruned)."""
        outs: dict[str, int] = {}
        ins: dict[str, int] = {}
        for name, module in self.model.named_modules():
            if weighted(module):
                w = original_weight(module)
                axis = 1 if is_conv1d(module) else out_axis(module)  # Conv1D stores its weight (in, out)
                outs[name] = int(w.shape[axis])
                ins[name] = int(w.shape[1 - axis]) * (getattr(module, "groups", 1) or 1)
        if masks is None:
            return outs, ins
        for group in self.groups:
            mask = masks.get(group.id)
            if mask is None:
                continue
            for member in group.producers:
                pruned = int((mask[member.roots] == 0).sum())
                outs[member.name] -= pruned
                module = self.model.get_submodule(member.name)
                if isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d) and module.groups == module.in_channels > 1:
                    ins[member.name] -= pruned
            producers = set(group.producer_names)
            for member in group.consumers:
                if member.name not in producers:
                    ins[member.name] -= int((mask[member.roots] == 0).sum())
        return outs, ins

    def flops(self, masks: dict[int, torch.Tensor] | None) -> float:
        """Multiply-accumulates x 2 of conv and linear layers for one sample."""
        outs, ins = self._channels(masks)
        total = 0.0
        for name, per_unit in self.layer_flops.items():
            module = self.model.get_submodule(name)
            groups = getattr(module, "groups", 1) or 1
            total += per_unit * outs[name] * ins[name] / groups
        return total

    def params_count(self, masks: dict[int, torch.Tensor] | None) -> int:
        outs, ins = self._channels(masks)
        total = 0
        for name, module in self.model.named_modules():
            if weighted(module):
                w = original_weight(module)
                kernel = w[0, 0].numel() if w.dim() > 2 else 1
                groups = getattr(module, "groups", 1) or 1
                total += outs[name] * ins[name] // groups * kernel + (outs[name] if module.bias is not None else 0)
            elif isinstance(module, NORMS) and module.weight is not None:
                total += 2 * self._norm_channels(name, masks)
        return total

    def _norm_channels(self, name: str, masks: dict[int, torch.Tensor] | None) -> int:
        norm = self.model.get_submodule(name)
        n = cast(nn.modules.batchnorm._BatchNorm, norm).num_features
        for group in self.groups:
            for member in group.norms:
                if member.name == name and masks is not None and group.id in masks:
                    n -= int((masks[group.id][member.roots] == 0).sum())
        return n

    def current_masks(self) -> dict[int, torch.Tensor]:
        return {g.id: self.group_mask(g) for g in self.groups}

    # ----------------------------------------------------------------------------- controller API
    @property
    def compression_rate(self) -> float | None:
        if self.flops_target:
            return 1 - self.flops(self.current_masks()) / self.flops(None)
        return self.level

    @compression_rate.setter
    def compression_rate(self, value: float) -> None:
        was_frozen = self.frozen
        self.frozen = False
        self.set_pruning_level(value)
        self.frozen = was_frozen

    @property
    def maximal_compression_rate(self) -> float:
        if self.flops_target:
            return 1 - self.flops(self._masks_for_level(0.999)) / self.flops(None)
        return 1.0

    def compression_stage(self) -> CompressionStage:
        actual = self.compression_rate or 0.0
        target = getattr(self.scheduler, "target_level", 0.0)
        if actual == 0:
            return CompressionStage.UNCOMPRESSED
        if math.isclose(actual, target, abs_tol=1e-5) or actual > target:
            return CompressionStage.FULLY_COMPRESSED
        return CompressionStage.PARTIALLY_COMPRESSED

    def statistics(self, quickly_collected_only: bool = False) -> Statistics:
        masks = self.current_masks()
        full_flops, flops = self.flops(None), self.flops(masks)
        full_params, params = self.params_count(None), self.params_count(masks)
        full_filters = sum(len(m.roots) for g in self.groups for m in g.producers)
        filters = sum(int(masks[g.id][m.roots].sum()) for g in self.groups for m in g.producers)
        stats = Statistics()
        stats.register(
            self.name,
            {
                "current_pruning_level": self.level,
                "target_pruning_level": getattr(self.scheduler, "target_level", None),
                "model_FLOPS_pruning_level": 1 - flops / full_flops if full_flops else 0.0,
                "model_params_pruning_level": 1 - params / full_params if full_params else 0.0,
                "model_filters_pruning_level": 1 - filters / full_filters if full_filters else 0.0,
                "flops": {"full": full_flops, "current": flops},
                "params": {"full": full_params, "current": params},
                "groups": len(self.groups),
                "skipped_layers": {name: s.reason for s in self.skipped if not s.by_rule for name in s.layers},
                "layers_left_by_rule": {name: s.reason for s in self.skipped if s.by_rule for name in s.layers},
            },
        )
        return stats

    def disable_scheduler(self) -> None:
        """The level stays where it is; the target is kept so `compression_stage()` still answers."""
        target = getattr(self._scheduler, "target_level", 0.0)
        super().disable_scheduler()
        cast(Any, self._scheduler).target_level = target

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        state[self.name].update(level=self.level, frozen=self.frozen)
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        own = state.get(self.name) or {}
        self.level = own.get("level", self.level)
        self.frozen = own.get("frozen", self.frozen)

    # ----------------------------------------------------------------------------- outputs
    def strip_model(self, model: nn.Module) -> nn.Module:
        """Masks folded into the weights, then the pruned channels removed physically."""
        for name, module in list(model.named_modules()):
            if parametrize.is_parametrized(module) and any(
                isinstance(p, FilterMask) for plist in cast(Any, module).parametrizations.values() for p in plist
            ):
                fold_parametrizations(model, name, lambda p: isinstance(p, FilterMask))
        remove_channels(model, self.groups, self.current_masks())
        return model

    def export_source(self, model: nn.Module) -> nn.Module:
        """The model the ONNX file is made from: the pruned channels physically removed."""
        remove_channels(model, self.groups, self.current_masks())
        return model


@register_algorithm(FilterPruningConfig)
def build_filter_pruning(ctx: BuildContext, section: FilterPruningConfig) -> FilterPruningController:
    params = section.params
    if params.interlayer_ranking_type == "learned_ranking":
        # LeGR ranks filters globally; NNCF turns these options on with it
        params = params.model_copy(
            update={
                "all_weights": True if params.all_weights is None else params.all_weights,
                "prune_first_conv": True if params.prune_first_conv is None else params.prune_first_conv,
                "prune_downsample_convs": True
                if params.prune_downsample_convs is None
                else params.prune_downsample_convs,
            }
        )
        section = section.model_copy(update={"params": params})
    allowed = {layer.module_name for layer in scoped_layers(ctx, section, section.algorithm)}
    if ctx.builder_state is not None:
        groups = [ChannelGroup.from_dict(g) for g in ctx.builder_state["groups"]]
        skipped = [SkippedLayers.from_dict(s) for s in ctx.builder_state.get("skipped", [])]
    else:
        groups, skipped = find_groups(ctx, allowed, bool(params.prune_first_conv), bool(params.prune_downsample_convs))
        groups, broken = check_groups(ctx.model, groups, ctx.example_inputs)
        skipped += broken
        for gid, group in enumerate(groups):
            group.id = gid
        _log_skipped(skipped)
        if not groups:
            logger.warning("filter pruning found no prunable channel group in the model")
    for group in groups:
        for member in group.producers:
            if not original_weight(ctx.model.get_submodule(member.name)).requires_grad:
                raise CompressionError(f"frozen layers are not allowed for filter pruning: {member.name}")
    ctrl = FilterPruningController(ctx.model, ctx, section, groups, layer_flops(ctx.model, ctx.example_inputs), skipped)
    if ctrl.learned_ranking:
        ctrl.ranking = _ranking(ctx, ctrl, section)
    ctrl.builder_state = {
        "groups": [g.to_dict() for g in groups],
        "skipped": [s.to_dict() for s in skipped],
        "ranking": {str(k): list(v) for k, v in (ctrl.ranking or {}).items()},
    }
    if ctx.should_init and ctrl.ranking:
        ctrl.set_pruning_level(section.pruning_init)  # the initial level under the learned ranking
    return ctrl


def _ranking(
    ctx: BuildContext, ctrl: FilterPruningController, section: FilterPruningConfig
) -> dict[int, tuple[float, float]]:
    params = section.params
    if ctx.builder_state is not None:
        return {int(k): (v[0], v[1]) for k, v in ctx.builder_state.get("ranking", {}).items()}
    if params.load_ranking_coeffs_path:
        ranking = load_ranking(params.load_ranking_coeffs_path)
    else:
        if not ctx.config.has_extra_struct(LeGRInitArgs):
            raise CompressionError(
                "learned_ranking needs training and validation functions: call register_default_init_args("
                "config, train_loader, train_steps_fn=..., validate_fn=..., val_loader=...) or set "
                "params.load_ranking_coeffs_path"
            )
        max_pruning = params.legr_params.max_pruning or ctrl.scheduler.target_level  # type: ignore[attr-defined]
        ranking = learn_ranking(ctrl, ctx.config.get_extra_struct(LeGRInitArgs), params.legr_params, max_pruning)
    if params.save_ranking_coeffs_path:
        save_ranking(ranking, params.save_ranking_coeffs_path)
    return ranking


def _log_skipped(skipped: list[SkippedLayers]) -> None:
    """Layers the config leaves whole are routine (info); layers left for a limitation are news (warning)."""
    for s in skipped:
        if s.by_rule:
            logger.info("filter pruning leaves %s whole: %s", ", ".join(s.layers), s.reason)
        else:
            logger.warning("filter pruning leaves %s whole: %s", ", ".join(s.layers), s.reason)
