"""Round-trip edits of YAML files people also edit by hand (stack files,
Pulumi.yaml): the values tenantctl owns change, everything else stays as it was
written — comments, key order, quoting, and keys tenantctl does not know
(a `secretsprovider` the Pulumi CLI recorded, a team's own config keys)."""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any


def _yaml() -> Any:
    from ruamel.yaml import YAML

    yaml = YAML()  # round-trip mode: comments and order are kept on the loaded nodes
    yaml.preserve_quotes = True
    yaml.width = 4096  # never fold a long value onto a second line
    return yaml


def edit(text: str, change: Callable[[Any], None]) -> str:
    """``text`` with ``change(document)`` applied to its round-trip document."""
    yaml = _yaml()
    document = yaml.load(text)
    if document is None:
        from ruamel.yaml.comments import CommentedMap

        document = CommentedMap()
    change(document)
    out = io.StringIO()
    yaml.dump(document, out)
    return out.getvalue()


def set_tree(target: MutableMapping, wanted: Mapping, prune_from: int = 0, _depth: int = 0) -> None:
    """Make ``target`` hold ``wanted`` key by key, nested mappings recursively,
    so a kept key keeps its comment and its place. Keys ``wanted`` lacks are
    dropped from depth ``prune_from`` down (0: the top level) and kept above it."""
    for key, value in wanted.items():
        current = target.get(key)
        if isinstance(value, Mapping) and isinstance(current, MutableMapping):
            set_tree(current, value, prune_from, _depth + 1)
        elif key not in target or not _same(current, value):
            target[key] = value
    if _depth >= prune_from:
        for key in [k for k in target if k not in wanted]:
            del target[key]


def _same(current: Any, value: Any) -> bool:
    # 1 == True in Python, not in YAML; a quoted "x" (ruamel's str subclass) is the string x.
    return current == value and isinstance(current, bool) == isinstance(value, bool)
