"""What each tenant uses: objects under its prefix, its context store, its queues.

Every measurement takes the record and the clients as parameters (tests pass
clients bound to the sandbox; the CLI builds them from the workspace). The
database is read as a database admin, never with the tenant's credentials:
the admin sees every tenant's size, and it reads row counts inside a
transaction that sets ``app.tenant_id`` so FORCE RLS on the tenant's tables
lets the owner count them without any policy being relaxed.

A part that cannot be measured (a queue deleted by hand, a database down) is
reported in ``errors`` and the other parts are still measured, so `--all` over
many tenants is not stopped by one broken tenant.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field

from tenant_runtime.tables import CONTEXT_ITEMS, CONVERSATIONS, DOCUMENTS, MESSAGES, TABLES
from tenantctl.drills.layout import BACKUPS
from tenantctl.models import StoreConnection, TenantRecord, TenantStatus, Tier, utcnow


class ObjectUsage(BaseModel):
    """Objects under the tenant prefix. Noncurrent versions are counted apart:
    they are invisible to the application but billed."""

    current_objects: int = 0
    current_bytes: int = 0
    noncurrent_versions: int = 0
    noncurrent_bytes: int = 0
    delete_markers: int = 0
    bytes_by_class: dict[str, int] = Field(default_factory=dict,
                                           description="current + noncurrent bytes per storage class")
    last_modified: datetime | None = None


class DbUsage(BaseModel):
    scope: Literal["schema", "database"]
    size_bytes: int
    rows: dict[str, int]
    last_write: datetime | None = None


class QueueUsage(BaseModel):
    """ApproximateNumberOf* attributes: SQS's own approximations."""

    visible: int
    in_flight: int
    delayed: int
    dlq_visible: int
    dlq_in_flight: int


class WorkspaceUsage(BaseModel):
    """One workspace of the tenant: its prefix, its schema (in the tenant's store), its queues."""

    name: str
    objects: ObjectUsage | None = None
    db: DbUsage | None = None
    queues: QueueUsage | None = None
    errors: list[str] = Field(default_factory=list)


class TenantUsage(BaseModel):
    tenant_id: str
    tier: Tier
    status: TenantStatus
    measured_at: datetime
    objects: ObjectUsage | None = None
    db: DbUsage | None = None
    queues: QueueUsage | None = None
    last_activity: datetime | None = None
    idle: bool = False
    idle_days: int
    errors: list[str] = Field(default_factory=list)
    # Each workspace measured apart (the tenant's own figures above exclude them: their prefixes and schemas
    # are beside the tenant's); its activity counts towards the tenant's.
    workspaces: dict[str, WorkspaceUsage] = Field(default_factory=dict)


AdminConnect = Callable[[TenantRecord], AbstractContextManager[Any]]


@dataclass
class UsageClients:
    """boto3 S3 and SQS clients, and a factory of admin connections to a tenant's store."""

    s3: Any
    sqs: Any
    admin_connect: AdminConnect


# -- S3 ------------------------------------------------------------------------
def _count(usage: ObjectUsage, prefix: str, page: dict) -> None:
    """One ListObjectVersions page's entries under ``prefix`` into ``usage``. Backups and drill reports
    (``<prefix>backups/``) are billed like the rest but are the operator's writes, not the tenant's
    activity: a nightly drill must not keep a tenant from going idle."""
    operators = prefix + BACKUPS

    def touched(item: dict) -> None:
        if not item.get("Key", "").startswith(operators):
            usage.last_modified = _newest(usage.last_modified, item.get("LastModified"))

    for v in page.get("Versions", []):
        size = int(v.get("Size", 0))
        if v.get("IsLatest", True):
            usage.current_objects += 1
            usage.current_bytes += size
        else:
            usage.noncurrent_versions += 1
            usage.noncurrent_bytes += size
        cls = v.get("StorageClass") or "STANDARD"
        usage.bytes_by_class[cls] = usage.bytes_by_class.get(cls, 0) + size
        touched(v)
    for m in page.get("DeleteMarkers", []):
        usage.delete_markers += 1
        touched(m)


def object_usage(s3: Any, bucket: str, prefix: str) -> ObjectUsage:
    """All versions under ``prefix`` (an unversioned bucket lists each object once,
    as its current version)."""
    usage = ObjectUsage()
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        _count(usage, prefix, page)
    return usage


def _root(prefix: str) -> str:
    """``tenants/`` of ``tenants/acme/`` (a tenant's or a workspace's prefix: one name under a root)."""
    return prefix[:prefix.rstrip("/").rfind("/") + 1]


def prefixes_usage(s3: Any, bucket: str, prefixes: Iterable[str]) -> dict[str, ObjectUsage]:
    """``object_usage`` of each of ``prefixes`` of one bucket, those under one root (``tenants/``)
    from one listing of the root split by prefix: the root's versions in pages of 1,000 instead of
    a listing per prefix (one call per tenant, however few objects it holds). Versions under the
    root outside ``prefixes`` (a tenant not measured) are listed and skipped."""
    usages = {p: ObjectUsage() for p in prefixes}
    roots: dict[str | None, list[str]] = {}
    for prefix in usages:  # a prefix not ending in "/" could hold another's keys: listed on its own
        roots.setdefault(_root(prefix) if prefix.endswith("/") else None, []).append(prefix)
    for root, under in roots.items():
        if root is None or len(under) == 1:
            usages.update({p: object_usage(s3, bucket, p) for p in under})
            continue
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=root):
            split: dict[str, dict[str, list]] = {}
            for field in ("Versions", "DeleteMarkers"):
                for item in page.get(field, []):
                    key = item.get("Key", "")
                    prefix = key[:key.find("/", len(root)) + 1]
                    if prefix in usages and prefix.startswith(root):
                        split.setdefault(prefix, {}).setdefault(field, []).append(item)
            for prefix, part in split.items():
                _count(usages[prefix], prefix, part)
    return usages


# -- SQS -----------------------------------------------------------------------
_DEPTH = ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed")


def _depth(sqs: Any, url: str) -> list[int]:
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=list(_DEPTH))["Attributes"]
    return [int(attrs.get(name, 0)) for name in _DEPTH]


def queue_usage(sqs: Any, queue_url: str, dlq_url: str) -> QueueUsage:
    visible, in_flight, delayed = _depth(sqs, queue_url)
    dlq_visible, dlq_in_flight, _ = _depth(sqs, dlq_url)
    return QueueUsage(visible=visible, in_flight=in_flight, delayed=delayed,
                      dlq_visible=dlq_visible, dlq_in_flight=dlq_in_flight)


# -- PostgreSQL ----------------------------------------------------------------
def db_usage(conn: Any, tenant_id: str, store: StoreConnection, tier: Tier) -> DbUsage:
    """Size, rows and newest write of the tenant's context store, read as the admin."""
    from psycopg import sql

    schema = store.schema_name
    with conn.transaction():
        cur = conn.cursor()
        # Read-only, and the RLS key set for this transaction only (SET LOCAL).
        cur.execute("SET TRANSACTION READ ONLY")
        cur.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant_id,))
        if tier is Tier.dedicated:
            scope = "database"
            cur.execute("SELECT pg_database_size(current_database())")
        else:
            scope = "schema"
            # pg_total_relation_size counts each table's indexes and TOAST too.
            cur.execute(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind IN ('r', 'm')",
                (schema,),
            )
        size = int(cur.fetchone()[0])
        rows = {}
        for table in TABLES:
            cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table)))
            rows[table] = int(cur.fetchone()[0])
        cur.execute(sql.SQL(
            "SELECT greatest((SELECT max(created_at) FROM {m}), (SELECT max(created_at) FROM {c}), "
            "(SELECT max(updated_at) FROM {v}), (SELECT max(updated_at) FROM {d}))"
        ).format(m=sql.Identifier(schema, MESSAGES), c=sql.Identifier(schema, CONTEXT_ITEMS),
                 v=sql.Identifier(schema, CONVERSATIONS), d=sql.Identifier(schema, DOCUMENTS)))
        last_write = cur.fetchone()[0]
    return DbUsage(scope=scope, size_bytes=size, rows=rows, last_write=last_write)


def admin_connector(secrets: Any, platform_admin_secret_arn: str, rds: Any | None = None,
                    connect_timeout: int = 5, application_name: str = "tenantctl-usage") -> AdminConnect:
    """Connections to a tenant's store as a database admin. Pooled stores (and
    any store when ``rds`` is None, as on the sandbox) use the platform's admin
    secret; a dedicated tenant's own RDS instance uses the RDS-managed master
    secret of that instance (looked up by its identifier). Secrets are JSON with
    username and password; host and database come from the record."""
    cache: dict[str, dict[str, str]] = {}
    # Threads measuring tenants at once read each secret once between them, and different secrets (each
    # dedicated instance's own) at the same time: a lock per secret.
    reading: dict[str, threading.Lock] = {}
    locks = threading.Lock()

    def secret_arn(record: TenantRecord) -> str:
        if record.tier is Tier.dedicated and rds is not None:
            from tenantctl.naming import rds_identifier

            found = rds.describe_db_instances(DBInstanceIdentifier=rds_identifier(record.tenant_id))["DBInstances"]
            master = (found[0].get("MasterUserSecret") or {}).get("SecretArn") if found else None
            if master:
                return master
        return platform_admin_secret_arn

    def connect(record: TenantRecord):
        import psycopg

        arn = secret_arn(record)
        with locks:
            lock = reading.setdefault(arn, threading.Lock())
        with lock:
            if arn not in cache:
                data = json.loads(secrets.get_secret_value(SecretId=arn)["SecretString"])
                cache[arn] = {"user": data.get("username") or data["user"], "password": data["password"]}
        store = record.resources.store
        return psycopg.connect(host=store.endpoint, port=store.port, dbname=store.database,
                               connect_timeout=connect_timeout, application_name=application_name, **cache[arn])

    return connect


class KeptConnections:
    """Admin connections kept open over a measurement of many tenants: one per store and login
    instead of one per tenant and workspace (each a TCP connection and a SCRAM login); each
    tenant's reads still run in a read-only transaction of their own (``db_usage``). A connection
    a read failed on is closed, and the next tenant of its store gets a new one.

    Thread-safe: tenants measured in threads at once each hold a connection of their own (a
    psycopg connection runs one transaction at a time), handed back when the tenant is read and
    taken by the next tenant of that store; a new login only when every kept one is in use, so
    at most one per thread and store (one per store one tenant after another)."""

    def __init__(self) -> None:
        self._idle: dict[tuple, list[Any]] = {}
        self._lock = threading.Lock()
        self._ended = False

    def __enter__(self) -> KeptConnections:
        return self

    def __exit__(self, *_: object) -> None:
        with self._lock:  # one still lent (a thread an interrupt left running) is closed when handed back
            self._ended, idle = True, [conn for conns in self._idle.values() for conn in conns]
            self._idle.clear()
        for conn in idle:
            conn.close()

    def wrap(self, clients: UsageClients) -> UsageClients:
        return replace(clients, admin_connect=lambda record: self._connect(clients.admin_connect, record))

    @contextmanager
    def _connect(self, connect: AdminConnect, record: TenantRecord) -> Iterator[Any]:
        store = record.resources.store
        # A dedicated store may have a login of its own (its RDS master secret): never shared.
        key = (id(connect), store.endpoint, store.port, store.database,
               record.tenant_id if record.tier is Tier.dedicated else None)
        with self._lock:
            kept = self._idle.get(key)
            conn = kept.pop() if kept else None
        if conn is None or conn.closed:
            conn = connect(record)
        try:
            yield conn
        except BaseException:
            conn.close()
            raise
        with self._lock:
            if not self._ended:
                self._idle.setdefault(key, []).append(conn)
                return
        conn.close()


# -- one tenant, all tenants ----------------------------------------------------------
def _newest(*times: datetime | None) -> datetime | None:
    present = [t for t in times if t is not None]
    return max(present) if present else None


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"


Listed = Mapping[tuple[str, str], ObjectUsage | Exception]  # (bucket, prefix) -> its objects, or why not


def list_objects(places: Iterable[tuple[UsageClients, TenantRecord]]) -> Listed:
    """The objects of every prefix (each tenant's and workspace's) of the records, each with the
    clients of its place, listed a bucket at a time (``prefixes_usage``) for ``measure``; a listing
    that fails is each of its prefixes' answer, so it fails those tenants' ``objects`` part alone."""
    wanted: dict[tuple[int, str], tuple[Any, list[str]]] = {}
    for clients, record in places:
        res = record.resources
        if res is not None:
            prefixes = wanted.setdefault((id(clients.s3), res.bucket), (clients.s3, []))[1]
            prefixes += [res.prefix, *(ws.prefix for ws in res.workspaces.values())]
    listed: dict[tuple[str, str], ObjectUsage | Exception] = {}
    for (_, bucket), (s3, prefixes) in wanted.items():
        try:
            listed.update({(bucket, p): u for p, u in prefixes_usage(s3, bucket, prefixes).items()})
        except Exception as exc:  # each tenant's objects part reports it; its other parts still measured
            listed.update({(bucket, p): exc for p in prefixes})
    return listed


def _objects(clients: UsageClients, bucket: str, prefix: str, listed: Listed | None) -> ObjectUsage:
    found = (listed or {}).get((bucket, prefix))
    if isinstance(found, Exception):
        raise found
    return found if found is not None else object_usage(clients.s3, bucket, prefix)


def measure(record: TenantRecord, clients: UsageClients, idle_days: int = 30,
            now: datetime | None = None, listed: Listed | None = None) -> TenantUsage:
    """Every usage figure of one tenant; parts that fail land in ``errors``. ``listed``: its
    prefixes' objects as ``list_objects`` read them with other tenants' (else listed here)."""
    now = now or utcnow()
    usage = TenantUsage(tenant_id=record.tenant_id, tier=record.tier, status=record.status,
                        measured_at=now, idle_days=idle_days)
    res = record.resources
    if res is None:
        usage.errors.append("no resources recorded (never provisioned successfully)")
        return usage
    # A tombstone's queues and store are gone by design; the objects it kept (backups included) still bill.
    live = record.status is not TenantStatus.deprovisioned
    _fill(usage, clients, res.bucket, res, lambda: _db(record, clients), live, listed)
    for name, ws in sorted(record.workspaces.items()):
        usage.workspaces[name] = _fill(WorkspaceUsage(name=name), clients, res.bucket, ws,
                                       lambda ws=ws, name=name: _db(record, clients, ws.store, name), live, listed)
    usage.last_activity = _newest(*(_activity(u) for u in [usage, *usage.workspaces.values()]))
    # A tenant that never did anything is idle once it is older than the window.
    since = usage.last_activity or record.created_at
    usage.idle = now - since > timedelta(days=idle_days)
    return usage


def _fill(usage: TenantUsage | WorkspaceUsage, clients: UsageClients, bucket: str, res: Any,
          db: Callable[[], DbUsage], live: bool = True, listed: Listed | None = None
          ) -> TenantUsage | WorkspaceUsage:
    """Objects under ``res.prefix``, ``res``'s queues and ``db()`` into ``usage`` (not ``live``: the
    objects only); a part that fails lands in its ``errors``."""
    parts: list[tuple[str, Callable[[], None]]] = [
        ("objects", lambda: setattr(usage, "objects", _objects(clients, bucket, res.prefix, listed))),
        ("queues", lambda: setattr(usage, "queues", queue_usage(clients.sqs, res.queue_url, res.dlq_url))),
        ("db", lambda: setattr(usage, "db", db())),
    ]
    if not live:
        parts = parts[:1]
    for name, run in parts:
        try:
            run()
        except Exception as exc:  # one broken part must not hide the others
            usage.errors.append(f"{name}: {_describe(exc)}")
    return usage


def _activity(usage: TenantUsage | WorkspaceUsage) -> datetime | None:
    return _newest(usage.objects and usage.objects.last_modified, usage.db and usage.db.last_write)


def _db(record: TenantRecord, clients: UsageClients, store: StoreConnection | None = None,
        workspace: str | None = None) -> DbUsage:
    """The tenant's store, or (``store``, ``workspace``) a workspace's schema in it, counted under its row key."""
    from tenantctl.naming import OwnerNames

    with clients.admin_connect(record) as conn:
        if store is None:
            return db_usage(conn, record.tenant_id, record.resources.store, record.tier)
        return db_usage(conn, OwnerNames(record.tenant_id, workspace).key, store, Tier.pooled)


MEASURED_STATUSES = (TenantStatus.active, TenantStatus.suspended)


def measure_all(records: Iterable[TenantRecord], clients: UsageClients, idle_days: int = 30,
                now: datetime | None = None) -> Iterator[TenantUsage]:
    """Usage of every active or suspended tenant (tombstones and tenants mid-
    provisioning have nothing settled to measure)."""
    records = [r for r in records if r.status in MEASURED_STATUSES]
    listed = list_objects((clients, r) for r in records)
    with KeptConnections() as kept:
        shared = kept.wrap(clients)
        for record in records:
            yield measure(record, shared, idle_days, now, listed)


def clients_from_workspace(ws: Any, record: TenantRecord | None = None) -> UsageClients:
    """Clients where a tenant (``record``) lives, its cell's account and its
    region (without one: the home cell's); the admin secret is the cell's
    ``db_admin_secret_arn`` output (dedicated on AWS: the instance's own)."""
    from tenantctl.errors import TargetUnavailable
    from tenantctl.naming import DEFAULT_CELL

    cell = record.cell if record is not None else DEFAULT_CELL
    arn = ws.cell_outputs(cell).get("db_admin_secret_arn")
    if not arn:
        raise TargetUnavailable(f"cell {cell!r} has no db_admin_secret_arn output: cannot read DB sizes as admin")
    clients = ws.clients_for(record) if record is not None else ws.cell_clients(cell)
    # On the sandbox dedicated stores live in the sandbox PostgreSQL, whose admin is the platform's.
    rds = None if ws.is_sandbox else clients("rds")
    return UsageClients(s3=clients("s3"), sqs=clients("sqs"),
                        admin_connect=admin_connector(clients("secretsmanager"), arn, rds=rds))


def per_place(ws: Any) -> Callable[[TenantRecord], UsageClients]:
    """``clients_from_workspace`` per (cell, region), made once each over a run of many tenants
    (`usage --all`, `hibernate --all`): its admin connector, and so the admin secret it reads once,
    shared by every tenant there."""
    made: dict[tuple[str, str], UsageClients] = {}
    making = threading.Lock()  # `hibernate --all`'s threads ask for them as they go

    def clients(record: TenantRecord) -> UsageClients:
        key = (record.cell, record.region)
        with making:
            if key not in made:
                made[key] = clients_from_workspace(ws, record)
            return made[key]

    return clients
