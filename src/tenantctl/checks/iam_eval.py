"""A small IAM policy evaluator: does a set of policy documents allow one request?

Enough of AWS's evaluation logic to judge the documents tenantctl generates
(identity policies of tenant roles, their trust policies, key policies) where
the sandbox cannot: moto does not evaluate condition keys such as ``s3:prefix``
or ``aws:RequestTag/...``, nor resource policies (see the README, "Isolation
guarantees"). The logic, after the IAM documentation's evaluation flow:

- an explicit Deny in any statement wins; otherwise any Allow allows; otherwise
  the request is implicitly denied;
- a statement applies when its Action/NotAction, Resource/NotResource,
  Principal/NotPrincipal and every Condition match; an account principal
  matches every principal of the account, a role principal its sessions;
- wildcards ``*`` and ``?``; actions case-insensitive, resources case-sensitive;
- conditions: the String*, Arn*, Bool and Null operators, with ``IfExists`` and
  the ``ForAnyValue:``/``ForAllValues:`` set qualifiers; condition keys are
  case-insensitive. A missing key fails a positive operator and satisfies a
  negated one (as in AWS).

Anything it does not model (policy variables, numeric/date/IP operators, an
unknown operator) raises ``Unsupported`` rather than guessing: a check built on
it fails closed.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from tenantctl import naming


class Unsupported(ValueError):
    """The document uses something this evaluator does not model."""


class Decision(str, Enum):
    allow = "allow"
    explicit_deny = "explicit-deny"
    implicit_deny = "implicit-deny"

    @property
    def allowed(self) -> bool:
        return self is Decision.allow


@dataclass(frozen=True)
class Request:
    action: str
    resource: str = "*"
    principal: str | None = None  # trust / key / bucket policies name who may call
    context: dict[str, Any] = field(default_factory=dict)  # condition keys -> value or list of values


def _list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _glob(pattern: str, value: str, ignore_case: bool = False) -> bool:
    if "${" in pattern:
        raise Unsupported(f"policy variable in {pattern!r}")
    return _glob_rx(pattern, ignore_case).fullmatch(value) is not None


@functools.lru_cache(maxsize=4096)
def _glob_rx(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    # A check evaluates the same few dozen patterns thousands of times: translated once each.
    rx = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(rx, re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL)


def _account_of(arn: str) -> str | None:
    parts = arn.split(":")
    return parts[4] if len(parts) > 5 and parts[0] == "arn" else None


def _session_of(role_arn: str, principal: str) -> bool:
    """A role named as principal matches that role's sessions (the caller of an
    assumed role is ``arn:aws:sts::<account>:assumed-role/<name>/<session>``;
    the role's path is not part of it)."""
    role = re.fullmatch(r"arn:(aws[\w-]*):iam::(\d{12}):role/(?:[^*?]*/)?([^/*?]+)", role_arn)
    if role is None:
        return False
    partition, account, name = role.groups()
    return re.fullmatch(rf"arn:{partition}:sts::{account}:assumed-role/{re.escape(name)}/[^/]+", principal) is not None


def _principal_matches(spec: Any, principal: str) -> bool:
    if spec == "*":
        return True
    if not isinstance(spec, dict):
        raise Unsupported(f"principal {spec!r}")
    for kind, values in spec.items():
        for value in _list(values):
            if value == "*" or value == principal:
                return True
            if kind == "AWS":
                # An account (root ARN or bare id) delegates to that account's own
                # IAM policies: any principal of the account matches here.
                root = re.fullmatch(r"arn:aws[\w-]*:iam::(\d{12}):root", value)
                account = root.group(1) if root else value if re.fullmatch(r"\d{12}", value) else None
                if account is not None and _account_of(principal) == account:
                    return True
                if _session_of(value, principal):
                    return True
    return False


def _string_op(base: str) -> tuple[Any, bool]:
    """(value comparison, negated) for a condition operator without qualifiers."""
    ops = {
        "StringEquals": (lambda want, got: want == got, False),
        "StringNotEquals": (lambda want, got: want == got, True),
        "StringEqualsIgnoreCase": (lambda want, got: want.lower() == got.lower(), False),
        "StringNotEqualsIgnoreCase": (lambda want, got: want.lower() == got.lower(), True),
        "StringLike": (lambda want, got: _glob(want, got), False),
        "StringNotLike": (lambda want, got: _glob(want, got), True),
        "ArnEquals": (lambda want, got: want == got, False),
        "ArnNotEquals": (lambda want, got: want == got, True),
        "ArnLike": (lambda want, got: _glob(want, got), False),
        "ArnNotLike": (lambda want, got: _glob(want, got), True),
        "Bool": (lambda want, got: str(want).lower() == str(got).lower(), False),
    }
    if base not in ops:
        raise Unsupported(f"condition operator {base!r}")
    return ops[base]


def _condition_holds(operator: str, key: str, wanted: Any, context: dict[str, Any]) -> bool:
    qualifier, _, op = operator.rpartition(":")
    if_exists = op.endswith("IfExists") and op != "IfExists"
    op = op.removesuffix("IfExists")
    present = key in context and context[key] is not None
    if op == "Null":
        return (not present) == (str(_list(wanted)[0]).lower() == "true")
    compare, negated = _string_op(op)
    wants = [str(w) for w in _list(wanted)]
    gots = [str(g) for g in _list(context.get(key))]
    if qualifier == "ForAllValues":
        return all(any(compare(w, g) for w in wants) != negated for g in gots)
    if qualifier == "ForAnyValue":
        return any(any(compare(w, g) for w in wants) != negated for g in gots)
    if qualifier:
        raise Unsupported(f"condition qualifier {qualifier!r}")
    if not present:
        return if_exists or negated
    if len(gots) != 1:
        raise Unsupported(f"multi-valued key {key!r} needs ForAnyValue/ForAllValues")
    matched = any(compare(w, gots[0]) for w in wants)
    return not matched if negated else matched


def _conditions_hold(conditions: dict[str, Any], context: dict[str, Any]) -> bool:
    ctx = {k.lower(): v for k, v in context.items()}
    for operator, pairs in (conditions or {}).items():
        for key, wanted in pairs.items():
            if not _condition_holds(operator, key.lower(), wanted, ctx):
                return False
    return True


def statement_applies(stmt: dict[str, Any], request: Request) -> bool:
    if "Action" in stmt:
        if not any(_glob(a, request.action, ignore_case=True) for a in _list(stmt["Action"])):
            return False
    elif "NotAction" in stmt:
        if any(_glob(a, request.action, ignore_case=True) for a in _list(stmt["NotAction"])):
            return False
    else:
        raise Unsupported("statement without Action or NotAction")
    if "Resource" in stmt:
        if not any(_glob(r, request.resource) for r in _list(stmt["Resource"])):
            return False
    elif "NotResource" in stmt:
        if any(_glob(r, request.resource) for r in _list(stmt["NotResource"])):
            return False
    if "Principal" in stmt:
        if request.principal is None or not _principal_matches(stmt["Principal"], request.principal):
            return False
    elif "NotPrincipal" in stmt:
        if request.principal is not None and _principal_matches(stmt["NotPrincipal"], request.principal):
            return False
    return _conditions_hold(stmt.get("Condition") or {}, request.context)


def evaluate(documents: Iterable[dict[str, Any]], request: Request) -> Decision:
    allowed = False
    for doc in documents:
        for stmt in _list(doc.get("Statement")):
            if not statement_applies(stmt, request):
                continue
            effect = stmt.get("Effect")
            if effect == "Deny":
                return Decision.explicit_deny
            if effect != "Allow":
                raise Unsupported(f"effect {effect!r}")
            allowed = True
    return Decision.allow if allowed else Decision.implicit_deny


# -- the requests tenantctl asks about -------------------------------------------------------

# ``region``: the bucket's, whose partition its ARN is of (no region: the aws partition).
def s3_object(action: str, bucket: str, key: str, *, region: str = "us-east-1") -> Request:
    return Request(action=action, resource=naming.arn(region, "s3", "", f"{bucket}/{key}"))


def s3_list(bucket: str, prefix: str, *, region: str = "us-east-1") -> Request:
    return Request(action="s3:ListBucket", resource=naming.arn(region, "s3", "", bucket), context={"s3:prefix": prefix})


def assume_role(role_arn: str, caller: str, tags: dict[str, str] | None = None) -> list[Request]:
    """AssumeRole, plus TagSession when session tags are passed (AWS checks both)."""
    tags = tags or {}
    context: dict[str, Any] = {f"aws:RequestTag/{k}": v for k, v in tags.items()}
    if tags:
        context["aws:TagKeys"] = list(tags)
    requests = [Request(action="sts:AssumeRole", resource=role_arn, principal=caller, context=context)]
    if tags:
        requests.append(Request(action="sts:TagSession", resource=role_arn, principal=caller, context=context))
    return requests


def allows_all(documents: list[dict[str, Any]], requests: Iterable[Request]) -> bool:
    return all(evaluate(documents, r).allowed for r in requests)
