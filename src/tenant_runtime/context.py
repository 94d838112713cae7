"""TenantContext: who a request acts for, resolved once per request.

Only the runtime's resolution makes one (``from_registry``, which
``TenantResolver.resolve`` and ``TenantRuntime.context`` call: the record is
always the registry reader's): the constructor wants a capability private to
this module, and a context is immutable — a tuple subclass without slots of
its own, so not even ``object.__setattr__`` can swap what it holds; copies
(``copy``, ``deepcopy``) are the same object while ``dataclasses.replace`` and
pickling are refused, so none of them makes a context with other contents.

Every service (store, objects, jobs, envelope, client factory) passes what it
is given through ``verified`` before any call: an object the resolution did not
issue (duck-typed, forged by hand, or a tuple built with a context's type) is
an ``UntrustedContext``; so is a context whose record was given other
resources after resolution, and a record no longer naming its tenant is
refused as well.

A workspace context (``workspace`` set) is its tenant's context routed one
level down: ``resources`` is the tenant's with the workspace's store, key,
prefix, queues and role in their place (bucket, region, tier and retention
classes stay the tenant's), and ``key`` (``<id>/<ws>``) replaces the tenant id
wherever the runtime scopes by it: the store's ``app.tenant_id`` and row key,
the envelope's encryption context, cursors, job bodies and the role's session
tag. Every service reads only ``resources`` and ``key``, so none of them can
mix a workspace's data with its tenant's or a sibling's.
"""

from __future__ import annotations

from collections.abc import Mapping
from operator import itemgetter
from types import MappingProxyType
from typing import Any

from tenant_runtime.errors import TenantMismatch, UntrustedContext, WorkspaceForbidden, WritesFrozen
from tenant_runtime.models import TenantRecord, TenantResources, tenant_prefix, workspace_key, workspace_prefix
from tenant_runtime.registry import RegistryReader

_CAPABILITY = object()  # held by this module only: what ``TenantContext(...)`` must be given
# The ids of the live contexts the resolution issued (a context's ``__del__`` drops its
# own): a set lookup, where a dictionary of weak references costs a Python call.
# Two live objects never share an id, and an id is reused only after its
# object's ``__del__`` ran, so an id here is the issued context itself.
_ISSUED: set[int] = set()

def _check_owner(tenant_id: str, record: TenantRecord) -> None:
    """The record, its resources and its prefix all belong to ``tenant_id``."""
    if not isinstance(record, TenantRecord):
        raise UntrustedContext(f"a context's record must be a TenantRecord, not {type(record).__name__}")
    owners = {record.tenant_id} | ({record.resources.tenant_id} if record.resources else set())
    if owners != {tenant_id}:
        # A context holding another tenant's record would route this tenant's
        # requests to that tenant's store, key, prefix and queue: refuse it.
        raise TenantMismatch(tenant_id, ",".join(sorted(owners - {tenant_id})), "registry record")
    if record.resources is not None and record.resources.prefix != tenant_prefix(tenant_id):
        raise TenantMismatch(tenant_id, record.resources.prefix, "object prefix")


def _workspace_view(tenant_id: str, record: TenantRecord, workspace: str) -> TenantResources:
    """The tenant's resources with the workspace's own in their place: what every
    service of a workspace context routes to."""
    ws = record.workspaces.get(workspace)
    if ws is None:
        raise WorkspaceForbidden(tenant_id, workspace, "the tenant has no such workspace")
    if ws.name != workspace or ws.prefix != workspace_prefix(tenant_id, workspace):
        raise TenantMismatch(tenant_id, ws.prefix, "workspace prefix")
    assert record.resources is not None
    return record.resources.model_copy(update={
        "store": ws.store, "kms_key_arn": ws.kms_key_arn, "kms_alias": ws.kms_alias, "prefix": ws.prefix,
        "queue_url": ws.queue_url, "dlq_url": ws.dlq_url, "role_arn": ws.role_arn, "workspaces": {}})


class TenantContext(tuple):
    """The tenant of one request, its registry record and, for a workspace
    context, the workspace it acts in (immutable)."""

    __slots__ = ()  # no __dict__: nothing but the tuple's items, fixed at issuance
    # Read in C (a NamedTuple's properties): every service reads ``key`` and
    # ``resources`` several times per call.
    tenant_id: str = property(itemgetter(0))  # type: ignore[assignment]
    record: TenantRecord = property(itemgetter(1))  # type: ignore[assignment]
    subject: str | None = property(itemgetter(2))  # type: ignore[assignment]
    claims: Mapping[str, Any] = property(itemgetter(3))  # type: ignore[assignment]
    workspace: str | None = property(itemgetter(4))  # type: ignore[assignment]
    # What the runtime scopes by: the tenant id, or ``<id>/<ws>`` for a workspace.
    key: str = property(itemgetter(5))  # type: ignore[assignment]
    # What this context reaches: the tenant's resources, or its workspace's.
    resources: TenantResources = property(itemgetter(6))  # type: ignore[assignment]
    # Item 7: the record's resources when issued (``verified`` compares: the record is a mutable model).

    def __new__(cls, tenant_id: str, record: TenantRecord, subject: str | None = None,
                claims: Mapping[str, Any] | None = None, *, workspace: str | None = None,
                _capability: object = None) -> TenantContext:
        if _capability is not _CAPABILITY:
            raise UntrustedContext("a TenantContext is made only by the runtime's resolution "
                                   "(TenantRuntime.resolve / TenantRuntime.context)")
        _check_owner(tenant_id, record)
        if workspace is None:
            # RegistryReader.get refuses records without resources, so this holds.
            assert record.resources is not None
            key, resources = tenant_id, record.resources
        else:
            key, resources = workspace_key(tenant_id, workspace), _workspace_view(tenant_id, record, workspace)
        return tuple.__new__(cls, (tenant_id, record, subject, MappingProxyType(dict(claims or {})), workspace,
                                   key, resources, record.resources))

    def __del__(self, _drop: Any = _ISSUED.discard) -> None:
        _drop(id(self))

    # Identity, not the tuple's contents: one context is one issuance.
    __eq__, __ne__, __hash__ = object.__eq__, object.__ne__, object.__hash__  # type: ignore[assignment]

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a TenantContext is read-only")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("a TenantContext is read-only")

    def __copy__(self) -> TenantContext:
        return self  # immutable: a copy is the context itself, still the one issued

    def __deepcopy__(self, memo: dict) -> TenantContext:
        return self

    def __reduce__(self) -> Any:
        raise TypeError("a TenantContext cannot be pickled: resolve the tenant again where it is needed")

    def __repr__(self) -> str:
        ws = f", workspace={self.workspace!r}" if self.workspace is not None else ""
        return f"TenantContext(tenant_id={self.tenant_id!r}{ws}, subject={self.subject!r})"

    def require(self, addressed_tenant: str, what: str = "resource") -> None:
        """Refuse (403) anything that belongs to another tenant."""
        if addressed_tenant != self.tenant_id:
            raise TenantMismatch(self.tenant_id, addressed_tenant, what)


def from_registry(registry: RegistryReader, tenant_id: str, subject: str | None = None,
                  claims: Mapping[str, Any] | None = None, reuse: TenantContext | None = None,
                  workspace: str | None = None) -> TenantContext:
    """The resolution's last step: a context for the registry's record of an
    active tenant (``TenantResolver.resolve`` after the token,
    ``TenantRuntime.context`` for work without one). The record comes from the
    registry reader, never from the caller. ``reuse``: a context issued before
    for the same subject and claims (the same token), given back while the
    registry still gives the record it holds (contexts are immutable).
    ``workspace``: a context of that workspace of the tenant (WorkspaceForbidden
    when the record has none of that name)."""
    if not isinstance(registry, RegistryReader):
        raise UntrustedContext(f"contexts are resolved from a RegistryReader, not a {type(registry).__name__}")
    record = registry.get(tenant_id)
    if (type(reuse) is TenantContext and id(reuse) in _ISSUED and reuse.record is record
            and reuse.tenant_id == tenant_id and reuse.workspace == workspace):
        # Issued here and immutable, with the very record the registry gives: the one
        # thing ``verified`` would add, whether that record (a model) was altered since,
        # every service checks before any call. Once per request, not at resolution too.
        return reuse
    ctx = TenantContext(tenant_id, record, subject, claims, workspace=workspace, _capability=_CAPABILITY)
    _ISSUED.add(id(ctx))
    return ctx


def verified(ctx: object) -> TenantContext:
    """``ctx`` when it is a context the resolution issued, whose record still has
    the resources it was issued with and names its tenant; else refused before
    the caller makes any call. (What the context holds cannot change: see
    ``TenantContext``; its record, a model, can.)"""
    if type(ctx) is not TenantContext or id(ctx) not in _ISSUED:
        raise UntrustedContext(f"{type(ctx).__name__} object is not a TenantContext the runtime resolved: "
                               "refused before any call")
    record = ctx[1]
    if record.resources is not ctx[7]:
        raise UntrustedContext(f"the context of tenant {ctx[0]!r} was altered after resolution: refused")
    if record.tenant_id != ctx[0]:
        # The resources (the same object) and the prefix passed _check_owner at
        # issuance; only the record's own id can have changed since: check the whole again.
        _check_owner(ctx[0], record)
    return ctx


def check_writable(ctx: TenantContext) -> None:
    """Writes are refused, retryably, while a move freezes them; reads go on."""
    move = ctx.record.move
    if move is not None and move.writes_frozen:
        raise WritesFrozen(ctx.tenant_id)
