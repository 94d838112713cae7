"""TenantContext: who a request acts for, resolved once per request.

Only the runtime's resolution makes one (``from_registry``, which
``TenantResolver.resolve`` and ``TenantRuntime.context`` call: the record is
always the registry reader's): the constructor
wants a capability private to this module, a context is read-only, and copies
(``copy``, ``deepcopy``) are the same object while ``dataclasses.replace`` and
pickling are refused, so none of them makes a context with other contents.

Every service (store, objects, jobs, envelope, client factory) passes what it
is given through ``verified`` before any call: an object the resolution did not
issue (duck-typed, or forged by hand) is an ``UntrustedContext``; a context
whose record or resources were swapped after resolution, or whose record,
resources and prefix do not all name its tenant, is refused as well.

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
from functools import partial
from types import MappingProxyType
from typing import Any
from weakref import ref

from tenant_runtime.errors import TenantMismatch, UntrustedContext, WorkspaceForbidden, WritesFrozen
from tenant_runtime.models import TenantRecord, TenantResources, tenant_prefix, workspace_key, workspace_prefix
from tenant_runtime.registry import RegistryReader

_CAPABILITY = object()  # held by this module only: what ``TenantContext(...)`` must be given
# Every context the resolution issued, by its id, with a weak reference to it and
# what it was issued with: (tenant, workspace, record, the record's resources, the
# resources it routes to, its key). An entry leaves with its context (the reference's
# callback, run before that id can belong to another object); a lookup compares the
# referent with the object asked about. A WeakKeyDictionary made a reference per
# lookup, two per request.
_Issued = tuple[str, str | None, TenantRecord, TenantResources | None, TenantResources, str]
_ISSUED: dict[int, tuple[ref[TenantContext], _Issued]] = {}
_NOT_ISSUED = (lambda: None, None)


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


class TenantContext:
    """The tenant of one request, its registry record and, for a workspace
    context, the workspace it acts in (read-only)."""

    # ``key`` and ``resources`` are fixed at issuance (slots, checked by ``verified``
    # like the rest): every service reads them, several times per call.
    __slots__ = ("tenant_id", "record", "subject", "claims", "workspace", "key", "resources", "__weakref__")
    tenant_id: str
    record: TenantRecord
    subject: str | None
    claims: Mapping[str, Any]
    workspace: str | None
    key: str  # what the runtime scopes by: the tenant id, or ``<id>/<ws>`` for a workspace
    resources: TenantResources  # what this context reaches: the tenant's, or its workspace's

    def __init__(self, tenant_id: str, record: TenantRecord, subject: str | None = None,
                 claims: Mapping[str, Any] | None = None, *, workspace: str | None = None,
                 _capability: object = None) -> None:
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
        for name, value in (("tenant_id", tenant_id), ("record", record), ("subject", subject),
                            ("claims", MappingProxyType(dict(claims or {}))), ("workspace", workspace),
                            ("key", key), ("resources", resources)):
            object.__setattr__(self, name, value)

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
    registry still gives the record it holds (every service verifies it).
    ``workspace``: a context of that workspace of the tenant (WorkspaceForbidden
    when the record has none of that name)."""
    if not isinstance(registry, RegistryReader):
        raise UntrustedContext(f"contexts are resolved from a RegistryReader, not a {type(registry).__name__}")
    record = registry.get(tenant_id)
    if (type(reuse) is TenantContext and _ISSUED.get(id(reuse), _NOT_ISSUED)[0]() is reuse
            and reuse.record is record and reuse.tenant_id == tenant_id and reuse.workspace == workspace):
        # Issued here, with the very record the registry gives: whether it (or the
        # record, a model) was altered since, ``verified`` tells, and every service
        # runs it before any call. Once per request, not at resolution too.
        return reuse
    ctx = TenantContext(tenant_id, record, subject, claims, workspace=workspace, _capability=_CAPABILITY)
    _ISSUED[id(ctx)] = (ref(ctx, partial(_unissue, id(ctx))),
                        (tenant_id, workspace, record, record.resources, ctx.resources, ctx.key))
    return ctx


def _unissue(key: int, dead: ref[TenantContext], issued: dict = _ISSUED) -> None:
    """The entry of a context being deallocated, removed (no lock: this runs in
    whichever thread drops the context, whatever it holds; dict operations are
    atomic). ``issued``: bound here, as module globals may be gone at exit."""
    if issued.get(key, (None,))[0] is dead:
        issued.pop(key, None)


def verified(ctx: object) -> TenantContext:
    """``ctx`` when it is a context the resolution issued, unaltered, whose
    record, resources and prefix belong to its tenant; else refused before the
    caller makes any call."""
    reference, issued = _ISSUED.get(id(ctx), _NOT_ISSUED)
    if type(ctx) is not TenantContext or reference() is not ctx:
        raise UntrustedContext(f"{type(ctx).__name__} object is not a TenantContext the runtime resolved: "
                               "refused before any call")
    tenant_id, workspace, record, resources, routed, key = issued
    if (ctx.tenant_id != tenant_id or ctx.workspace != workspace or ctx.record is not record
            or record.resources is not resources or ctx.resources is not routed or ctx.key is not key):
        raise UntrustedContext(f"the context of tenant {tenant_id!r} was altered after resolution: refused")
    if record.tenant_id != tenant_id:
        # The resources (frozen, the same object) and the prefix passed _check_owner at
        # issuance; only the record's own id can have changed since: check the whole again.
        _check_owner(tenant_id, record)
    return ctx


def check_writable(ctx: TenantContext) -> None:
    """Writes are refused, retryably, while a move freezes them; reads go on."""
    move = ctx.record.move
    if move is not None and move.writes_frozen:
        raise WritesFrozen(ctx.tenant_id)
