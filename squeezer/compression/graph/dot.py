"""Graphviz dumps of the traced graph (original_graph.dot / compressed_graph.dot in log_dir)."""

from __future__ import annotations

import json
from pathlib import Path

from torch import fx


def write_dot(gm: fx.GraphModule, names: dict[fx.Node, str], path: Path) -> None:
    lines = ["strict digraph {"]
    ids = {node: i for i, node in enumerate(gm.graph.nodes)}
    for node, i in ids.items():
        label = names.get(node) or f"{node.op}:{node.target}"
        lines.append(f"  {i} [label={json.dumps(label)}];")
    for node, i in ids.items():
        for src in node.all_input_nodes:
            lines.append(f"  {ids[src]} -> {i};")
    lines.append("}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
