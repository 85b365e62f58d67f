"""Which weighted layers an algorithm acts on: layer types, registered modules and scopes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from squeezer.compression.build import BuildContext
from squeezer.compression.graph.modules import is_weighted_for
from squeezer.compression.graph.scopes import check_scopes_match, should_consider


@dataclass(frozen=True)
class Layer:
    module_name: str  # qualified name in the compressed model
    node_name: str  # NNCF scope name of its first call (module name when the model was not traced)


def scoped_layers(ctx: BuildContext, section: Any, algorithm: str) -> list[Layer]:
    """Weighted layers passing the global and algorithm scopes; unmatched scopes are an error."""
    ignored = (ctx.cfg.ignored_scopes or []) + (getattr(section, "ignored_scopes", None) or [])
    target = ctx.cfg.target_scopes if ctx.cfg.target_scopes is not None else getattr(section, "target_scopes", None)
    candidates: list[tuple[Layer, list[str]]] = []
    if ctx.traced is not None:
        modules = ctx.traced.modules
        seen: set[str] = set()
        all_names = [*ctx.traced.names.values(), *ctx.traced.nncf_names.values()]
        for node, name in ctx.traced.names.items():
            if node.op != "call_module" or str(node.target) in seen:
                continue
            module = modules.get(str(node.target))
            if module is None or not is_weighted_for(module, algorithm):
                continue
            seen.add(str(node.target))
            candidates.append((Layer(str(node.target), name), [name, ctx.traced.nncf_names[node]]))
    else:
        all_names = [n for n, _ in ctx.model.named_modules()]
        for module_name, module in ctx.model.named_modules():
            if module_name and is_weighted_for(module, algorithm):
                candidates.append((Layer(module_name, module_name), [module_name]))
    if getattr(section, "validate_scopes", True):
        for kind, patterns in (("ignored_scopes", ignored), ("target_scopes", target or [])):
            if patterns:
                check_scopes_match(all_names, patterns, kind, f"$.compression.{kind}")
    return [layer for layer, aliases in candidates if should_consider(aliases, ignored, target)]
