"""Property diffs between two sets of a resource's inputs (camelCase, as the
program declares them): what a preview shows for an update or a replace, and
what a refresh shows as drift (recorded -> live).

Values are compared as what they mean, not how they are spelled: JSON documents
given as strings (policies, redrive policies) are compared parsed and diffed
inside, numbers whether they arrive as floats, ints or numeric strings, and an
empty string as an absent value. Paths are dotted (``tags.owner``,
``policy.Statement[1]``); a list that grows or shrinks names each element
added (``(none) → ...``, at its new index) or removed (``... → (none)``, at its
old one), the others aligned as they were; secret values are never carried.
"""

from __future__ import annotations

import json
from difflib import SequenceMatcher
from typing import Any

from tenantctl.engines.base import PropertyDiff
from tenantctl.policy import UNKNOWN  # pulumi's unknown-value sentinel

SECRET = "[secret]"
UNKNOWN_TEXT = "[unknown]"  # a value known only once applied
# Input names whose values are secrets wherever they appear.
SECRET_KEYS = frozenset({"password", "masterPassword", "secretString", "secretBinary", "secret_string"})


def _document(value: Any) -> Any:
    """A JSON object or array given as a string, parsed; anything else as it is."""
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def plain(value: Any) -> Any:
    """A value as people read it: integral floats as ints, unknowns spelled out."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if value == UNKNOWN:
        return UNKNOWN_TEXT
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def like(expected: Any, live: Any) -> Any:
    """``live`` spelled like ``expected`` where the API answers in strings (SQS's
    "600", "true"), so a diff shows 0 -> 600 rather than 0 -> "600"."""
    if isinstance(live, str) and not isinstance(expected, str):
        if isinstance(expected, bool) and live.lower() in ("true", "false"):
            return live.lower() == "true"
        number = _number(live)
        if isinstance(expected, (int, float)) and number is not None:
            return plain(number)
    return live


def _absent(value: Any) -> bool:
    return value is None or value == ""


def same(old: Any, new: Any) -> bool:
    old, new = _document(old), _document(new)
    if _absent(old) and _absent(new):
        return True
    if isinstance(old, dict) and isinstance(new, dict):
        return all(same(old.get(k), new.get(k)) for k in set(old) | set(new))
    if isinstance(old, list) and isinstance(new, list):
        return len(old) == len(new) and all(same(a, b) for a, b in zip(old, new, strict=True))
    a, b = _number(old), _number(new)
    if a is not None and b is not None:
        return a == b
    if isinstance(old, bool) or isinstance(new, bool):  # SQS and friends answer "true" / "false"
        return str(old).lower() == str(new).lower()
    return old == new


def _walk(path: str, old: Any, new: Any, secret: bool, out: list[PropertyDiff]) -> None:
    if same(old, new):
        return
    old, new = _document(old), _document(new)
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            _walk(f"{path}.{key}" if path else str(key), old.get(key), new.get(key),
                  secret or key in SECRET_KEYS, out)
        return
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            _walk(f"{path}[{i}]", a, b, secret, out)
        return
    if isinstance(old, list) and isinstance(new, list):
        _walk_resized(path, old, new, secret, out)
        return
    _leaf(path, old, new, secret, out)


def _walk_resized(path: str, old: list, new: list, secret: bool, out: list[PropertyDiff]) -> None:
    """A list that grew or shrank (a statement added to a policy): its elements aligned (difflib),
    those in place diffed inside, each added or removed one a diff of its own."""
    def key(value: Any) -> str:
        return json.dumps(plain(_document(value)), sort_keys=True, default=str)

    blocks = SequenceMatcher(a=[key(v) for v in old], b=[key(v) for v in new], autojunk=False).get_opcodes()
    for tag, i1, i2, j1, j2 in blocks:
        if tag == "equal":
            continue
        if tag == "replace" and i2 - i1 == j2 - j1:
            for k in range(i2 - i1):
                _walk(f"{path}[{j1 + k}]", old[i1 + k], new[j1 + k], secret, out)
            continue
        for i in range(i1, i2):
            _leaf(f"{path}[{i}]", _document(old[i]), None, secret, out)
        for j in range(j1, j2):
            _leaf(f"{path}[{j}]", None, _document(new[j]), secret, out)


def _leaf(path: str, old: Any, new: Any, secret: bool, out: list[PropertyDiff]) -> None:
    if secret:
        out.append(PropertyDiff(path=path, old=None if _absent(old) else SECRET, new=None if _absent(new) else SECRET))
    else:
        out.append(PropertyDiff(path=path, old=plain(old), new=plain(new)))


def property_diffs(old: dict[str, Any], new: dict[str, Any], keys: set[str] | None = None) -> list[PropertyDiff]:
    """What differs from ``old`` to ``new``, one PropertyDiff per changed leaf
    (dicts and lists are descended into; an element a list gains or loses is one). ``keys``: only these
    top-level inputs (a refresh compares what the handler reads, nothing else)."""
    out: list[PropertyDiff] = []
    for key in sorted((set(old) | set(new)) if keys is None else keys):
        if key.startswith("__"):
            continue
        _walk(key, old.get(key), new.get(key), key in SECRET_KEYS, out)
    return out


def value_text(value: Any) -> str:
    """A value on one line: documents as compact JSON, booleans as JSON spells them."""
    if isinstance(value, (dict, list, bool)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


def describe(diff: PropertyDiff) -> str:
    """``path: old -> new`` on one line (absent values as ``(none)``)."""

    def text(value: Any) -> str:
        if value is None:
            return "(none)"
        return value_text(value)

    return f"{diff.path}: {text(diff.old)} → {text(diff.new)}"
