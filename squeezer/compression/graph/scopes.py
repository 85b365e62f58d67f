"""Scope matching: exact names, or `{re}` patterns applied with re.search."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from squeezer.errors import ScopeError

RE_PREFIX = "{re}"


def matches(name: str, pattern: str) -> bool:
    if RE_PREFIX in pattern:
        return re.search(pattern.replace(RE_PREFIX, ""), name) is not None
    return name == pattern


def matches_any(names: str | Iterable[str], patterns: Sequence[str] | None) -> bool:
    """True if any alias in `names` matches any pattern."""
    if not patterns:
        return False
    aliases = [names] if isinstance(names, str) else list(names)
    return any(matches(n, p) for n in aliases for p in patterns)


def should_consider(names: str | Iterable[str], ignored: Sequence[str] | None, target: Sequence[str] | None) -> bool:
    """Allow-list (`target`) and deny-list (`ignored`); ignore wins."""
    if target is not None and not matches_any(names, target):
        return False
    return not matches_any(names, ignored)


def check_scopes_match(all_names: Iterable[str], patterns: Sequence[str], kind: str, path: str) -> None:
    """Raise `ScopeError` naming the patterns that match no operation of the model."""
    names = list(all_names)
    unmatched = [p for p in patterns if not any(matches(n, p) for n in names)]
    if unmatched:
        sample = ", ".join(names[:8])
        raise ScopeError(
            f"no operation of the model matches the {kind} {unmatched}; operation names look like: {sample}",
            path=path,
        )
