"""What every resource handler shares: the desired resource, the sandbox
context (retrying boto3 clients, PostgreSQL), and the create/update/delete
protocol that makes a create idempotent.

A create first looks for the resource a crashed run may have made (by its
deterministic name, or by the ``tenantctl:urn`` tag where the service has no
names: KMS keys, VPCs, subnets...) and adopts it; only then does it make one.
Tag scans cost a call per candidate, so handlers that need them only scan
when the state holds a ``creating`` intent for the urn (``recovering``).
Handlers whose make() is refused when the name is taken (``taken_codes``)
skip the lookup when not recovering: they make at once and adopt only on that
refusal, so the common create costs no read and a taken name still ends adopted.
What the make call answered (an ARN, an id) goes in ``Desired.known`` so
configure need not read it back.

``read`` is the refresh's half: the live values of exactly the inputs the
handler's ``configure`` sets, keyed and shaped like the inputs, so drift is a
plain diff and an update resets every drifted value it reports.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, TypeVar

from tenantctl import naming

T = TypeVar("T")
URN_TAG = "tenantctl:urn"
MAX_TAG_VALUE = 256


def urn_tag(urn: str) -> str:
    """The value of a resource's ``tenantctl:urn`` tag: its urn, hashed when over the tag value limit."""
    if len(urn) <= MAX_TAG_VALUE:
        return urn
    return "sha256:" + hashlib.sha256(urn.encode()).hexdigest()


@dataclass
class Desired:
    """A resource as the program declares it (camelCase inputs)."""

    urn: str
    type: str
    name: str
    inputs: dict[str, Any]
    known: dict[str, Any] = field(default_factory=dict)  # outputs the make call already answered
    made: bool = False  # made by this create (not adopted): it holds nothing this run did not put in it
    # An interrupted create's: when its intent was first written (``ResourceState.intended_at``). A lookup by
    # tag adopts nothing made before it: that was not this create's.
    not_before: datetime | None = None

    def get(self, key: str, default: Any = None) -> Any:
        value = self.inputs.get(key)
        return default if value is None else value

    def physical_name(self, key: str = "name") -> str:
        """The input name, else Pulumi-style autonaming made deterministic
        (`<logical>-<7 hex of the urn>`) so a re-run finds what a crash left."""
        return self.inputs.get(key) or f"{self.name}-{hashlib.sha256(self.urn.encode()).hexdigest()[:7]}"

    @property
    def urn_tag(self) -> str:
        return urn_tag(self.urn)

    def tags(self, with_urn: bool = False) -> dict[str, str]:
        tags = {k: str(v) for k, v in (self.inputs.get("tags") or {}).items()}
        if with_urn:
            tags[URN_TAG] = self.urn_tag
        return tags

    def tag_list(self, with_urn: bool = False, key: str = "Key", value: str = "Value") -> list[dict[str, str]]:
        return [{key: k, value: v} for k, v in self.tags(with_urn).items()]


@dataclass
class Context:
    """The sandbox as handlers see it."""

    region: str
    client: Callable[[str], Any]  # service name -> retrying boto3 client
    pg_connect: Callable[..., Any]  # (dbname=None) -> psycopg connection (autocommit) as the sandbox superuser
    pg_endpoint: tuple[str, int, str, str, str]  # host, port, main database, user, password
    stack_outputs: Callable[[str], dict[str, Any]]  # another stack's outputs, from its state
    _account: list[dict[str, Any]] = field(default_factory=list)

    # The caller identity of these credentials: the engine keeps it for its life
    # (identity never changes for a set of credentials), so a run asks once.
    identity: Callable[[], dict[str, Any]] | None = None

    def caller_identity(self) -> dict[str, Any]:
        if self.identity is not None:
            return self.identity()
        if not self._account:
            self._account.append(self.client("sts").get_caller_identity())
        return self._account[0]

    @property
    def account_id(self) -> str:
        return str(self.caller_identity()["Account"])

    def arn(self, service: str, resource: str, account: str | None = None) -> str:
        """The ARN of ``resource`` of ``service`` in the sandbox's region (and its partition)."""
        return naming.arn(self.region, service, self.account_id if account is None else account, resource)


def error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def is_missing(exc: Exception, *codes: str) -> bool:
    """The error says the resource does not exist (any service's spelling of it)."""
    code = error_code(exc)
    return bool(code) and (code in codes or any(
        word in code for word in ("NotFound", "NoSuch", "NonExistent", "DoesNotExist")))


def ignore_missing(fn: Callable[[], Any], *codes: str) -> None:
    """Run a delete; a resource that is already gone is success (deletes must be re-runnable)."""
    from botocore.exceptions import ClientError

    try:
        fn()
    except ClientError as exc:
        if is_missing(exc, *codes):
            return
        raise


def read_or_none(fn: Callable[[], Any], *codes: str) -> Any:
    """The result of a describe call, or None when the resource is gone."""
    from botocore.exceptions import ClientError

    try:
        return fn()
    except ClientError as exc:
        if is_missing(exc, *codes):
            return None
        raise


def exists(fn: Callable[[], Any], *codes: str) -> bool:
    """Whether a describe call finds the resource (False when it is gone; other errors raise)."""
    return read_or_none(fn, *codes) is not None


def managed_tags(d: Desired, live: dict[str, str]) -> dict[str, str | None]:
    """The live values of the tags the program declares (others, the urn tag
    included, are not tenantctl's to judge: configure never removes them)."""
    return {k: live.get(k) for k in d.tags()}


# IAM is eventually consistent: a principal created moments before (a tenant role
# named in its key policy, the runtime role in a tenant trust policy) can be
# refused as unknown for a few seconds. Those calls are retried with these
# waits (~30 s in all, AWS's "a few seconds" with a margin); anything else that
# is malformed fails at once. The Pulumi AWS provider does the same on real
# AWS (docs/aws.md, "IAM propagation").
PROPAGATION_WAITS = (1.0, 2.0, 4.0, 8.0, 15.0)
_UNKNOWN_PRINCIPAL_CODES = ("MalformedPolicyDocumentException", "MalformedPolicyDocument")


def names_unknown_principal(exc: Exception) -> bool:
    """A policy refused because a principal it names is not (yet) known to IAM."""
    error = (getattr(exc, "response", None) or {}).get("Error", {})
    return error.get("Code") in _UNKNOWN_PRINCIPAL_CODES and "principal" in str(error.get("Message", "")).lower()


def once_principals_exist(call: Callable[[], T]) -> T:
    """``call()``, retried (bounded by PROPAGATION_WAITS) while it is refused for
    naming a principal IAM has not propagated yet."""
    from botocore.exceptions import ClientError

    for wait in (*PROPAGATION_WAITS, None):
        try:
            return call()
        except ClientError as exc:
            if wait is None or not names_unknown_principal(exc):
                raise
            time.sleep(wait)
    raise AssertionError("unreachable")


def as_int(value: Any) -> int:
    """Pulumi numbers arrive as floats."""
    return int(float(value))


class Handler:
    """One resource type. Subclasses implement find / make / configure / remove."""

    type: ClassVar[str]
    # Inputs whose change replaces the resource (delete, then create).
    replace_on: ClassVar[tuple[str, ...]] = ()
    # True when a plain create should not call find(): it costs a call (a scan by tag, a read by name
    # ahead of a make that is idempotent anyway) that only a crashed run's leftovers make worth paying.
    # find() still serves a delete of an interrupted create, which has no id.
    find_when_recovering: ClassVar[bool] = False
    # The value configure gives an input the program leaves unset: what a read compares the live value with.
    read_defaults: ClassVar[dict[str, Any]] = {}
    # Error codes with which make() says the name is taken (see the module doc).
    taken_codes: ClassVar[tuple[str, ...]] = ()

    def find(self, ctx: Context, d: Desired) -> str | None:
        return None

    def make(self, ctx: Context, d: Desired) -> str:
        raise NotImplementedError

    def configure(self, ctx: Context, rid: str, d: Desired, olds: dict[str, Any] | None) -> dict[str, Any]:
        """Bring the mutable settings to ``d`` (idempotent); return the computed outputs.

        ``olds`` is None right after ``make`` (which already applied what it
        could), else the previous inputs ({} for an adopted resource)."""
        return {}

    def remove(self, ctx: Context, rid: str, d: Desired) -> None:
        raise NotImplementedError

    def planned_outputs(self, ctx: Context, d: Desired) -> dict[str, Any]:
        """The outputs a create will answer that follow from the inputs alone (an
        ARN made of the name): a preview plans the dependents with them instead
        of unknowns, so a resource made again under its name (deleted out of band)
        does not show them as updates the run then finds unchanged."""
        return {}

    def read(self, ctx: Context, rid: str | None, d: Desired) -> dict[str, Any] | None:
        """The live values of the inputs ``configure`` manages (keyed and shaped
        like ``d.inputs``), or None when the resource is gone. Changes nothing.
        The default knows existence only."""
        return None if self.find(ctx, d) is None else {}

    # The protocol the engine calls.
    def create(self, ctx: Context, d: Desired, recovering: bool) -> tuple[str, dict[str, Any]]:
        if self.taken_codes and not recovering:
            from botocore.exceptions import ClientError

            try:
                rid = self.make(ctx, d)
            except ClientError as exc:
                if error_code(exc) not in self.taken_codes:
                    raise
            else:
                d.made = True
                return rid, self.configure(ctx, rid, d, None)
        rid = self.find(ctx, d) if (recovering or not self.find_when_recovering) else None
        if rid is None:
            rid = self.make(ctx, d)
            d.made = True
            return rid, self.configure(ctx, rid, d, None)
        # Adopted: it may predate the inputs (a crash mid-configure), converge all.
        return rid, self.configure(ctx, rid, d, {})

    def update(self, ctx: Context, rid: str, d: Desired, olds: dict[str, Any]) -> dict[str, Any]:
        return self.configure(ctx, rid, d, olds)

    def delete(self, ctx: Context, rid: str | None, d: Desired) -> None:
        """Delete; ``rid`` None means a create was interrupted: find it first."""
        if rid is None:
            rid = self.find(ctx, d)
            if rid is None:
                return
        self.remove(ctx, rid, d)

    def diff(self, olds: dict[str, Any], news: dict[str, Any]) -> str:
        """"same" | "update" | "replace" between normalized inputs."""
        if olds == news:
            return "same"
        changed = {k for k in set(olds) | set(news) if olds.get(k) != news.get(k)}
        return "replace" if changed & set(self.replace_on) else "update"
