"""Every test asserts what it checks: none passes on "no exception was raised" alone.

A test function counts as asserting when its body holds an `assert`, a `raise`, a `pytest.raises` /
`pytest.warns` / `pytest.fail`, a call of an `assert*` function (`torch.testing.assert_close`,
`np.testing.assert_allclose`), or a call by name of a helper in tests/ that asserts (directly or
through another such helper)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
PYTEST_CHECKS = {"raises", "warns", "fail", "deprecated_call"}
Function = ast.FunctionDef | ast.AsyncFunctionDef


def _called_name(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def _asserts_itself(function: Function) -> bool:
    for node in ast.walk(function):
        if isinstance(node, ast.Assert | ast.Raise):
            return True
        if isinstance(node, ast.Call):
            name = _called_name(node)
            if name.startswith("assert") or (isinstance(node.func, ast.Attribute) and name in PYTEST_CHECKS):
                return True
    return False


def _calls_by_name(function: Function) -> set[str]:
    return {n.func.id for n in ast.walk(function) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}


def unasserted_tests() -> list[str]:
    trees = {path: ast.parse(path.read_text(encoding="utf-8")) for path in sorted(TESTS.rglob("*.py"))}
    helpers: dict[str, list[Function]] = {}
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, Function) and not node.name.startswith("test_"):
                helpers.setdefault(node.name, []).append(node)
    asserting = {name for name, functions in helpers.items() if any(map(_asserts_itself, functions))}
    grown = True
    while grown:  # helpers that call asserting helpers
        before = len(asserting)
        asserting |= {name for name, fns in helpers.items() if any(_calls_by_name(f) & asserting for f in fns)}
        grown = len(asserting) > before
    found = []
    for path, tree in trees.items():
        for node in ast.walk(tree):
            is_test = isinstance(node, Function) and node.name.startswith("test_")
            if is_test and not _asserts_itself(node) and not _calls_by_name(node) & asserting:
                found.append(f"{path.relative_to(TESTS.parent)}:{node.lineno} {node.name}")
    return found


def test_every_test_function_asserts_something():
    assert unasserted_tests() == []


def test_the_scan_finds_a_test_that_only_runs_code():
    tree = ast.parse("def test_runs():\n    export(model)\n\ndef test_checks():\n    assert export(model)\n")
    runs, checks = (n for n in tree.body if isinstance(n, ast.FunctionDef))
    assert not _asserts_itself(runs) and _asserts_itself(checks)
