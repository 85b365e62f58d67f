"""Module surgery that never touches shared classes.

`torch.nn.utils.parametrize` gives each parametrized module a generated class, and a deep copy
shares that class with the original; `remove_parametrizations` on the copy would then strip the
property from the original too. So copies get fresh, unparametrized module objects instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, cast

import torch
from torch import nn
from torch.nn.utils import parametrize


def original_class(module: nn.Module) -> type[nn.Module]:
    """The module's own class, under the subclass torch.nn.utils.parametrize makes for it."""
    cls = type(module)
    return cls.__bases__[0] if parametrize.is_parametrized(module) else cls


def unparametrized_copy(module: nn.Module) -> nn.Module:
    """A shallow copy of `module` of its original class, without parametrizations or `weight`."""
    cls = original_class(module)
    new = cls.__new__(cls)
    new.__dict__ = {k: (v.copy() if isinstance(v, dict) else v) for k, v in module.__dict__.items()}
    new._modules.pop("parametrizations", None)
    new._parameters.pop("weight", None)
    return new


def replace_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, attr, new)


def weight_parametrizations(module: nn.Module, tensor: str = "weight") -> list[nn.Module]:
    """The parametrizations applied to `module.<tensor>`, in order (empty when there are none)."""
    if not parametrize.is_parametrized(module, tensor):
        return []
    return list(getattr(cast(Any, module).parametrizations, tensor))


def original_weight(module: nn.Module, tensor: str = "weight") -> torch.Tensor:
    """The stored (unparametrized) `module.<tensor>` (nn.MultiheadAttention's is `in_proj_weight`)."""
    if not parametrize.is_parametrized(module, tensor):
        return cast(torch.Tensor, getattr(module, tensor))
    return cast(torch.Tensor, getattr(cast(Any, module).parametrizations, tensor).original)


def fold_parametrizations(root: nn.Module, name: str, fold: Callable[[nn.Module], bool]) -> nn.Module:
    """Replace `root.<name>` by a copy whose stored tensors have the `fold`-selected parametrizations
    applied, keeping the others registered (masks fold exactly: they come before quantizers)."""
    module = root.get_submodule(name)
    lists = dict(cast(Any, module).parametrizations.items()) if parametrize.is_parametrized(module) else {}
    new = unparametrized_copy(module)
    for tensor_name, plist in lists.items():
        new._parameters.pop(tensor_name, None)
        with torch.no_grad():
            value = plist.original.detach().clone()
            keep = []
            for p in plist:
                if fold(p):
                    value = p(value)
                else:
                    keep.append(p)
        setattr(new, tensor_name, nn.Parameter(value, requires_grad=plist.original.requires_grad))
        for p in keep:
            parametrize.register_parametrization(new, tensor_name, p, unsafe=True)
    replace_submodule(root, name, new)
    return new


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """`model` in eval mode for the block; afterwards every submodule gets back its own mode (a user's
    frozen BatchNorm inside a training model stays frozen, which `model.train(was_training)` undoes)."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes.items():
            m.training = training
