"""`tenantctl search reindex ID`: rotate a tenant's search key and re-hash its
documents' index under it (tenant_runtime.documents owns the how; this module
reaches the tenant the way the runtime does: its registry record, its own
store login from its secret, its KMS key). ``rebuild_unindexed``: the same
reindex, run by provisioning and an in-place restore after the schema template
re-ran, for each store of the tenant holding items in no index."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from tenant_runtime import errors as runtime_errors
from tenant_runtime.context import from_registry
from tenant_runtime.crypto import Envelope
from tenant_runtime.documents import ReindexProgress, ReindexResult
from tenant_runtime.objects import ObjectAccess
from tenant_runtime.registry import TENANT_STORE, RegistryReader, marks_change, reindex_marks
from tenant_runtime.store import ContextStore
from tenantctl.engines.base import EventSink, phase
from tenantctl.errors import Conflict, DataCorrupt, InvalidInput, KeyUnusable, TargetUnavailable
from tenantctl.models import TenantRecord, TenantStatus
from tenantctl.naming import require_valid
from tenantctl.operations.hibernate import wake_held

REINDEX = "search reindex"  # the lock's operation
PLURALS = {"document": "documents", "summary": "summaries"}  # item kinds in progress lines


@contextmanager
def _tenant_store(ws: Any, record: TenantRecord) -> Iterator[tuple[ContextStore, Callable[[str | None], Any]]]:
    """(workspace -> its context) and the tenant's store; runtime errors as tenantctl's."""
    reader = RegistryReader(ws.platform_outputs()["registry_table"], client=ws.client("dynamodb"))
    clients = ws.clients_for(record)  # its key and secret: in its cell's account, its region
    # Objects: a large body lives in the tenant's prefix and is read whole to re-hash it.
    store = ContextStore(Envelope(lambda _ctx: clients("kms")), lambda _ctx: clients("secretsmanager"),
                         objects=ObjectAccess(lambda _ctx: clients("s3")))
    try:
        yield store, lambda workspace: from_registry(reader, record.tenant_id, subject="tenantctl",
                                                     workspace=workspace)
    except runtime_errors.KeyUnusable as exc:
        raise KeyUnusable(str(exc)) from None
    except runtime_errors.TenantInactive as exc:  # suspended (or on its way out) since its record was read
        raise InvalidInput(str(exc)) from None
    except runtime_errors.DecryptionFailed as exc:  # stopped there: what was re-hashed stays so
        raise DataCorrupt(f"tenant {record.tenant_id!r}: {exc}; write the document again (or restore its body "
                          "object's earlier version), then run the reindex again") from None
    except (runtime_errors.StoreUnavailable, runtime_errors.KmsUnavailable, runtime_errors.RegistryUnavailable,
            runtime_errors.TenantWaking) as exc:
        raise TargetUnavailable(str(exc)) from None
    finally:
        store.close()


def reindex_search(ws: Any, tenant_id: str, on_event: EventSink | None = None, wake: bool = True) -> Reindexed | None:
    """The tenant's store, then each of its workspaces' (each under its own
    search key), under the tenant's lock (another run on the tenant, a second
    reindex included: Conflict, exit 5). Nothing is lost if it stops half
    way: documents already re-hashed are found under the new key, the others
    under the old one (both stay live until every document moved); run it
    again to finish. The record says a store's reindex is unfinished
    (``search_reindex_since`` and ``_stores``, which `status` shows) until one
    finishes it (this command, or any other reindex of that store). A
    hibernated tenant is woken first (its progress to ``on_event``): the
    reindex reads and writes its database; without ``wake`` it is left asleep
    and nothing done (None): a fleet run that listed it awake, hibernated since."""
    require_valid(tenant_id)
    _reindexable(ws.registry.require(tenant_id))
    with ws.registry.hold(tenant_id, REINDEX) as held:
        _reindexable(held.record)  # as locked: it may have changed since
        if held.record.hibernation is not None:
            if not wake and held.record.store_hibernation is not None:
                return None
            wake_held(ws, held, on_event)
        workspaces = sorted(held.record.resources.workspaces) if held.record.resources else []
        # Every store marked at once: `status` says the run is unfinished from its start (a run
        # finishing a stopped one keeps that one's) until its last store is done.
        marker = RecordMarker(ws, held.record)
        marker.begin([TENANT_STORE, *workspaces])
        try:
            with _tenant_store(ws, held.record) as (store, context):
                done = store.reindex(context(None), progress=_progress(on_event, tenant_id), marker=marker)
                of_workspaces = {}
                for workspace in workspaces:
                    phase(on_event, tenant_id, f"re-indexing workspace {workspace}")
                    of_workspaces[workspace] = store.reindex(context(workspace), marker=marker,
                                                             progress=_progress(on_event, tenant_id, workspace))
        finally:
            held.record = marker.record  # the lock's release writes on the record as marked
        # Every store of the tenant is indexed now, under one key (a removed workspace's analyzer goes).
        held.record = ws.registry.save(held.record, search_rebuild_due=False, search_analyzers={
            TENANT_STORE: done.analyzer, **{name: each.analyzer for name, each in of_workspaces.items()}})
    return Reindexed(**done.model_dump(), workspaces=of_workspaces)


def store_analyzers(ws: Any, record: TenantRecord) -> dict[str, list[str]]:
    """Each store's (``TENANT_STORE`` the tenant's own, else a workspace's name)
    live search keys' analyzers, oldest first, read from the store (no KMS call)."""
    workspaces = sorted(record.resources.workspaces) if record.resources else []
    with _tenant_store(ws, record) as (store, context):
        return {name: store.index_analyzers(context(name or None)) for name in (TENANT_STORE, *workspaces)}


class RecordMarker:
    """A reindex's marker (``tenant_runtime.registry.reindex_marks``) written by
    tenantctl's registry writer on ``record``, the one its run holds or just
    wrote (``record``: as marked since)."""

    def __init__(self, ws: Any, record: TenantRecord) -> None:
        self.ws, self.record = ws, record

    def begin(self, stores: list[str]) -> None:
        self._write(reindex_marks(self.record, begun=stores))

    def mark(self, tenant_id: str, store: str, finished: bool) -> None:
        self._write(reindex_marks(self.record, *(((), [store]) if finished else ([store], ()))))

    def _write(self, marks: dict[str, Any]) -> None:
        if marks_change(self.record, marks):
            self.record = self.ws.registry.save(self.record, **marks)


def _progress(on_event: EventSink | None, tenant_id: str, workspace: str | None = None) -> ReindexProgress:
    """A progress line per batch of a store's reindex."""
    where = f" workspace {workspace}" if workspace else ""

    def report(kind: str, done: int, total: int) -> None:
        phase(on_event, tenant_id, f"re-indexed{where}: {done} of {total} {PLURALS.get(kind, kind)}")

    return report


def _reindexable(record: TenantRecord) -> None:
    if record.status is not TenantStatus.active:
        raise InvalidInput(f"tenant {record.tenant_id!r} is {record.status.value}: only an active tenant is reindexed")


class Reindexed(ReindexResult):
    """The tenant's store's reindex, and each of its workspaces' by name."""

    workspaces: dict[str, ReindexResult] = {}


def _settled(ws: Any, record: TenantRecord, rebuilt: dict[str, ReindexResult]) -> TenantRecord:
    """``record`` with no rebuild owed any more, and the analyzer of each store
    ``rebuilt``. Written conditionally on its version: a record that moved on
    meanwhile keeps the flag (the next provision finds nothing to rebuild: one
    count per store), never fails the rebuild that just finished."""
    analyzers = {**record.search_analyzers, **{store: done.analyzer for store, done in rebuilt.items()}}
    if not record.search_rebuild_due and analyzers == record.search_analyzers:
        return record
    try:
        return ws.registry.save(record, search_rebuild_due=False, search_analyzers=analyzers)
    except Conflict:
        return record


def can_rebuild(record: TenantRecord) -> bool:
    """Its stores can be reindexed now: the tenant is active, its database awake."""
    return record.status is TenantStatus.active and record.resources is not None and record.store_hibernation is None


def rebuilding(workspace: str | None, items: int, why: str) -> str:
    """The progress line before a store's rebuild (``on_rebuild`` of ``rebuild_unindexed``)."""
    return f"rebuilding the search index{f' of workspace {workspace}' if workspace else ''}: {items} items {why}"


def rebuild_unindexed(ws: Any, record: TenantRecord, on_rebuild: Callable[[str | None, int], None] | None = None,
                      ) -> tuple[TenantRecord, dict[str, ReindexResult]]:
    """Reindex each store of an active tenant (its own, then each workspace's)
    that holds items in no search index: a store of the earlier posting layout
    once the schema template upgraded it (search refuses to answer there,
    IndexIncomplete). Stores fully indexed are left as they are (one count
    each). ``record``: the tenant's, as the caller just wrote or read it; the
    rebuild is recorded as due (``search_rebuild_due``) until it finished, so
    a failed one, or one a tenant not serving put off, is run by the next
    provision. Returns the record and {"": the tenant's, workspace: its} for
    the stores rebuilt. ``on_rebuild(workspace, items)``: told before each
    store that holds unindexed items is rebuilt (workspace None: the
    tenant's), never for one that is only counted."""
    tenant_id = record.tenant_id
    if not record.search_rebuild_due:
        record = ws.registry.save(record, search_rebuild_due=True)
    if not can_rebuild(record):
        # Not searched meanwhile (or its database stopped): search refuses until the next provision or reindex.
        return record, {}
    rebuilt = {}
    marker = RecordMarker(ws, record)  # each store rebuilt is marked while it is, as every reindex
    try:
        with _tenant_store(ws, record) as (store, context):
            for workspace in (None, *sorted(record.resources.workspaces)):
                ctx = context(workspace)
                if not (items := store.unindexed(ctx)):
                    continue
                if on_rebuild is not None:
                    on_rebuild(workspace, items)
                # counted just now: not again (if_unindexed)
                rebuilt[workspace or TENANT_STORE] = store.reindex(ctx, marker=marker)
    except (KeyUnusable, TargetUnavailable, DataCorrupt) as exc:
        raise type(exc)(f"tenant {tenant_id!r}: its search index could not be rebuilt after the schema upgrade "
                        f"({exc}); search refuses to answer until `tenantctl search reindex {tenant_id}` "
                        "(or a provision of the tenant) rebuilds it") from None
    return _settled(ws, marker.record, rebuilt), rebuilt
