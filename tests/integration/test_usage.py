"""Usage, alarms and the report on really provisioned tenants (`us-*`, made by
the real provision operation on the sandbox) carrying different amounts of
data: tenantctl.usage.measure must match what was written and what direct counts say."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta

import pytest
from fault_tools import listed
from psycopg import sql
from tenant_data import Sandbox, write_history

from tenant_runtime.tables import TABLES as STORE_TABLES
from tenantctl import naming
from tenantctl.models import TenantRecord, TenantStatus, Tier, utcnow
from tenantctl.operations.deprovision import deprovision
from tenantctl.operations.usage import report_data
from tenantctl.usage.cost import load_prices
from tenantctl.usage.html_report import latest_drill_verdicts, render_html, write_report
from tenantctl.usage.measure import UsageClients, admin_connector, clients_from_workspace, measure, measure_all

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Load:
    """What a test tenant carries."""

    objects: int = 0
    object_size: int = 0
    overwritten: int = 0          # objects written twice: one noncurrent version each
    glacier: int = 0              # extra objects stored as GLACIER
    conversations: int = 0
    messages_per_conversation: int = 0
    context_items: int = 0
    queued: int = 0
    dead: int = 0                 # messages sitting in the DLQ


# id -> (spec fields, load)
LOADS = {
    "us-small": ({}, Load(objects=3, object_size=1000, conversations=1, messages_per_conversation=2,
                          context_items=1, queued=1)),
    # A queue delay: its jobs count as delayed, and the queue-age alarm waits the delay out.
    "us-big": ({"queue": {"delay_seconds": 120}},
               Load(objects=25, object_size=40_000, overwritten=5, glacier=2, conversations=6,
                    messages_per_conversation=30, context_items=40, queued=7, dead=3)),
    "us-ded": ({"tier": "dedicated"}, Load(objects=4, object_size=5000, conversations=2, messages_per_conversation=5,
                                           context_items=3)),
    "us-empty": ({}, Load()),
}


@pytest.fixture(scope="module")
def box(sandbox) -> Sandbox:
    return Sandbox(sandbox)


@pytest.fixture(scope="module")
def clients(workspace) -> UsageClients:
    return clients_from_workspace(workspace)


def write_load(box: Sandbox, record: TenantRecord, load: Load) -> None:
    res = record.resources
    s3, sqs = box.client("s3"), box.client("sqs")
    for i in range(load.objects):
        s3.put_object(Bucket=res.bucket, Key=f"{res.prefix}docs/{i:04d}.bin", Body=b"x" * load.object_size)
    for i in range(load.overwritten):  # same size again: the first write becomes noncurrent
        s3.put_object(Bucket=res.bucket, Key=f"{res.prefix}docs/{i:04d}.bin", Body=b"y" * load.object_size)
    for i in range(load.glacier):
        s3.put_object(Bucket=res.bucket, Key=f"{res.prefix}archive/{i:04d}.bin",
                      Body=b"z" * load.object_size, StorageClass="GLACIER")
    for i in range(load.queued):
        sqs.send_message(QueueUrl=res.queue_url, MessageBody=f"job {i}")
    for i in range(load.dead):
        sqs.send_message(QueueUrl=res.dlq_url, MessageBody=f"dead {i}")
    write_history(box, record, load.conversations, load.messages_per_conversation, load.context_items, item_bytes=500)


@pytest.fixture(scope="module")
def tenants(provision_tenant, box, workspace) -> dict[str, tuple[TenantRecord, Load]]:
    out = {}
    for tenant_id, (fields, load) in LOADS.items():
        record = provision_tenant(tenant_id, **fields)
        write_load(box, record, load)
        out[tenant_id] = (workspace.registry.require(tenant_id), load)
    yield out
    # The session's sandbox is shared, and its quotas with it (5 VPCs; 60 rules in the shared
    # database's security group, one per pooled tenant): every tenant this module made goes.
    for tenant_id in [*LOADS, "us-alarmed", "us-drilled"]:
        record = workspace.registry.get(tenant_id)
        if record is not None and record.status is TenantStatus.active:
            deprovision(workspace, tenant_id, final_backup=False)


# -- direct counts -----------------------------------------------------------------
def direct_current_objects(box: Sandbox, record: TenantRecord) -> tuple[int, int]:
    count = size = 0
    res = record.resources
    for page in box.client("s3").get_paginator("list_objects_v2").paginate(Bucket=res.bucket, Prefix=res.prefix):
        for obj in page.get("Contents", []):
            count += 1
            size += obj["Size"]
    return count, size


def direct_db(box: Sandbox, record: TenantRecord) -> dict:
    store = record.resources.store
    with box.admin(store.database) as conn, conn.transaction():
        conn.execute("SELECT set_config('app.tenant_id', %s, true)", (record.tenant_id,))
        sizes = [conn.execute("SELECT pg_total_relation_size(to_regclass(%s))",
                              (f"{store.schema_name}.{t}",)).fetchone()[0]
                 for t in STORE_TABLES]
        database = conn.execute("SELECT pg_database_size(%s)", (store.database,)).fetchone()[0]
        counts = {t: conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
            sql.Identifier(store.schema_name, t))).fetchone()[0]
                  for t in STORE_TABLES}
        writes = [conn.execute(sql.SQL("SELECT max({}) FROM {}").format(
            sql.Identifier(column), sql.Identifier(store.schema_name, table))).fetchone()[0]
            for table, column in (("messages", "created_at"), ("context_items", "created_at"),
                                  ("conversations", "updated_at"), ("documents", "updated_at"))]
    return {"schema_bytes": sum(sizes), "database_bytes": database, "rows": counts, "writes": [w for w in writes if w]}


# -- alarms --------------------------------------------------------------------------
def test_every_tenant_has_its_alarms_and_topic_and_loses_them_with_the_tenant(box, tenants, provision_tenant,
                                                                              workspace):
    cloudwatch, sns = box.client("cloudwatch"), box.client("sns")
    for tenant_id, (record, _) in tenants.items():
        topic = f"arn:aws:sns:{record.region}:{record.resources.role_arn.split(':')[4]}:tenantctl-{tenant_id}-alarms"
        assert sns.get_topic_attributes(TopicArn=topic)["Attributes"]["TopicArn"] == topic
        assert {"Key": "tenant", "Value": tenant_id} in sns.list_tags_for_resource(ResourceArn=topic)["Tags"]
        alarms = {a["AlarmName"]: a for a in cloudwatch.describe_alarms(
            AlarmNamePrefix=f"tenantctl-{tenant_id}-")["MetricAlarms"]}
        expected = {"dlq-depth", "queue-age"} | ({"db-storage", "db-cpu"} if record.tier is Tier.dedicated else set())
        assert set(alarms) == {f"tenantctl-{tenant_id}-{s}" for s in expected}
        for alarm in alarms.values():
            assert alarm["AlarmActions"] == [topic] and alarm["OKActions"] == [topic]
            tags = cloudwatch.list_tags_for_resource(ResourceARN=alarm["AlarmArn"])["Tags"]
            assert {"Key": "tenant", "Value": tenant_id} in tags
        dlq = alarms[f"tenantctl-{tenant_id}-dlq-depth"]
        assert (dlq["Namespace"], dlq["MetricName"], dlq["Threshold"], dlq["ComparisonOperator"]) == (
            "AWS/SQS", "ApproximateNumberOfMessagesVisible", 0.0, "GreaterThanThreshold")
        assert dlq["Dimensions"] == [{"Name": "QueueName", "Value": naming.dlq_name(tenant_id)}]
        age = alarms[f"tenantctl-{tenant_id}-queue-age"]
        assert age["MetricName"] == "ApproximateAgeOfOldestMessage"
        assert age["Dimensions"] == [{"Name": "QueueName", "Value": naming.queue_name(tenant_id)}]
        delay = LOADS[tenant_id][0].get("queue", {}).get("delay_seconds", 0)
        assert age["Threshold"] == delay + 1800  # stuck: still queued half an hour after its delay
        if record.tier is Tier.dedicated:
            db = {"Name": "DBInstanceIdentifier", "Value": naming.rds_identifier(tenant_id)}
            assert alarms[f"tenantctl-{tenant_id}-db-cpu"]["Dimensions"] == [db]
            assert alarms[f"tenantctl-{tenant_id}-db-storage"]["MetricName"] == "FreeStorageSpace"

    gone = provision_tenant("us-alarmed")
    assert cloudwatch.describe_alarms(AlarmNamePrefix="tenantctl-us-alarmed-")["MetricAlarms"]
    deprovision(workspace, gone.tenant_id, final_backup=False)
    assert cloudwatch.describe_alarms(AlarmNamePrefix="tenantctl-us-alarmed-")["MetricAlarms"] == []
    assert not [t for t in listed(sns, "list_topics", "Topics")
                if t["TopicArn"].endswith(":tenantctl-us-alarmed-alarms")]


# -- usage ---------------------------------------------------------------------------
@pytest.mark.parametrize("tenant_id", list(LOADS))
def test_usage_matches_what_was_written_and_direct_counts(box, clients, tenants, tenant_id):
    record, load = tenants[tenant_id]
    # PostgreSQL's own workers (autovacuum, autoanalyze) may grow a database between two reads of its
    # size: usage's read must fall between a direct read before it and one after.
    before = direct_db(box, record)
    usage = measure(record, clients, idle_days=30)
    assert usage.errors == []

    objects = usage.objects
    current = load.objects + load.glacier
    assert (objects.current_objects, objects.current_bytes) == (current, current * load.object_size)
    assert (objects.current_objects, objects.current_bytes) == direct_current_objects(box, record)
    assert (objects.noncurrent_versions, objects.noncurrent_bytes) == (load.overwritten,
                                                                        load.overwritten * load.object_size)
    assert objects.bytes_by_class.get("GLACIER", 0) == load.glacier * load.object_size
    assert sum(objects.bytes_by_class.values()) == objects.current_bytes + objects.noncurrent_bytes

    db = usage.db
    direct = direct_db(box, record)
    written = {"conversations": load.conversations, "messages": load.conversations * load.messages_per_conversation,
               "context_items": load.context_items, "documents": load.conversations,  # one per conversation
               "search_keys": 1 if load.conversations else 0, "summaries": 0,
               "search_analyzers": 1 if load.conversations else 0,  # the analyzer of that key
               # as many as the analyzer made:
               "search_vocab": direct["rows"]["search_vocab"],
               "search_stats": direct["rows"]["search_stats"]}
    assert db.rows == written == direct["rows"]
    size = "database_bytes" if record.tier is Tier.dedicated else "schema_bytes"
    assert db.scope == ("database" if record.tier is Tier.dedicated else "schema")
    assert min(before[size], direct[size]) <= db.size_bytes <= max(before[size], direct[size]), (before, direct)

    queues = usage.queues
    delayed = bool(LOADS[tenant_id][0].get("queue", {}).get("delay_seconds"))
    assert (queues.visible, queues.delayed) == ((0, load.queued) if delayed else (load.queued, 0))
    assert (queues.dlq_visible, queues.in_flight, queues.dlq_in_flight) == (load.dead, 0, 0)
    if load.objects or load.conversations:
        versions = [v["LastModified"] for page in box.client("s3").get_paginator("list_object_versions").paginate(
            Bucket=record.resources.bucket, Prefix=record.resources.prefix) for v in page.get("Versions", [])]
        assert usage.last_activity == max([*versions, *direct["writes"]])
    else:
        assert usage.last_activity is None
    assert usage.idle is False  # everything was created just now


def test_bigger_tenants_measure_bigger(clients, tenants):
    small, big = (measure(tenants[n][0], clients) for n in ("us-small", "us-big"))
    assert big.db.size_bytes > small.db.size_bytes
    assert big.objects.current_bytes > small.objects.current_bytes
    assert sum(big.db.rows.values()) > sum(small.db.rows.values())


def test_idle_tenants_are_flagged_by_last_activity_or_age(clients, tenants):
    record, _ = tenants["us-empty"]
    old = record.model_copy(update={"created_at": utcnow() - timedelta(days=40)})
    assert measure(old, clients, idle_days=30).idle is True
    assert measure(old, clients, idle_days=60).idle is False
    busy, _ = tenants["us-big"]
    later = utcnow() + timedelta(days=31)
    assert measure(busy, clients, idle_days=30, now=later).idle is True
    assert measure(busy, clients, idle_days=30).idle is False


def test_a_broken_part_is_reported_and_the_rest_still_measured(clients, tenants):
    record, load = tenants["us-small"]
    gone = record.model_copy(update={"resources": record.resources.model_copy(
        update={"queue_url": record.resources.queue_url.replace("-jobs", "-missing")})})
    usage = measure(gone, clients)
    assert usage.queues is None and len(usage.errors) == 1 and usage.errors[0].startswith("queues:")
    assert usage.objects.current_objects == load.objects and usage.db.rows["context_items"] == load.context_items


def test_usage_all_walks_the_registry_and_skips_tombstones(box, sandbox, project, tenants, provision_tenant, workspace):
    gone = provision_tenant("us-gone")
    deprovision(workspace, gone.tenant_id)
    assert workspace.registry.require("us-gone").status is TenantStatus.deprovisioned

    usages = {u.tenant_id: u for u in measure_all(workspace.registry.iter_all(), clients_from_workspace(workspace))}
    assert set(tenants) <= set(usages) and "us-gone" not in usages
    assert all(not usages[t].errors for t in tenants)

    # The command itself, as CI would run it, in the same project on the same sandbox.
    env = {**os.environ, "TENANTCTL_SANDBOX_DIR": str(sandbox.state_dir), "PYTHONWARNINGS": "ignore"}
    env.pop("TENANTCTL_TARGET", None)
    proc = subprocess.run([sys.executable, "-m", "tenantctl", "usage", "--all", "--json", "--idle-days", "30"],
                          cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    listed = {u["tenant_id"]: u for u in out["tenants"]}
    assert set(tenants) <= set(listed) and "us-gone" not in listed
    for tenant_id, (_, load) in tenants.items():
        assert listed[tenant_id]["db"]["rows"]["messages"] == load.conversations * load.messages_per_conversation
        assert listed[tenant_id]["objects"]["current_objects"] == load.objects + load.glacier
    assert not set(tenants) & set(out["idle"])

    # The tombstone by its id: the objects it kept (its final backup) measured, no error for the queues and
    # store it no longer has; not priced as if it still had them (a platform share, a key, alarms).
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "tenantctl", *args], cwd=project, env=env, capture_output=True,
                              text=True, timeout=300)

    kept = cli("usage", "us-gone", "--json")
    assert kept.returncode == 0, kept.stderr
    tomb = json.loads(kept.stdout)
    assert tomb["errors"] == [] and tomb["objects"]["current_objects"] >= 3  # the backup's dump, manifest, index
    assert tomb["db"] is None and tomb["queues"] is None
    priced = cli("cost", "us-gone", "--json")
    assert priced.returncode == 3 and "is deprovisioned" in json.loads(priced.stdout)["error"]["message"], priced


def test_report_html_carries_each_tenants_figures_and_drill_verdicts(box, clients, tenants, provision_tenant, workspace,
                                                                    tmp_path):
    from tenantctl.drills.context import context_from_workspace
    from tenantctl.drills.run import drill

    drilled = provision_tenant("us-drilled")
    write_load(box, drilled, Load(objects=1, object_size=10, conversations=1, messages_per_conversation=1))
    report = drill(context_from_workspace(workspace), drilled)  # a real drill: backup, scratch restore, verify
    assert report.passed, report.reasons
    records = [r for r, _ in tenants.values()] + [workspace.registry.require(drilled.tenant_id)]
    data = report_data(workspace, load_prices(), records, drills=latest_drill_verdicts(records, s3=box.client("s3")))
    html = render_html(data)
    big = next(row for row in data.rows if row.usage.tenant_id == "us-big")
    assert f'data-tenant="{big.usage.tenant_id}"' in html
    assert f"${big.cost.total:.2f}" in html
    assert html.count("no drill yet") == len(tenants)
    assert 'class="verdict-pass"' in html and "checks passed" in html
    row = next(row for row in data.rows if row.usage.tenant_id == "us-drilled")
    assert row.drills[0].verdict == "pass" and row.usage.objects.current_objects > 1  # backup + drill report counted
    # ... but the drill is not the tenant's activity: a nightly drill must not keep it from going idle.
    prefix = drilled.resources.prefix
    written = [v["LastModified"] for page in box.client("s3").get_paginator("list_object_versions").paginate(
        Bucket=drilled.resources.bucket, Prefix=prefix) for v in page.get("Versions", [])
        if not v["Key"].startswith(prefix + "backups/")]
    assert row.usage.last_activity == max([*written, *direct_db(box, drilled)["writes"]])

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium:  # the page as a browser sees it, offline (tests/e2e covers it in depth)
        path = write_report(data, tmp_path / "report.html")
        proc = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                               f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", path.as_uri()],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert '<tr data-tenant="us-big">' in proc.stdout and f"${big.cost.total:.2f}" in proc.stdout


def test_a_dedicated_instance_is_read_with_its_own_rds_master_secret(box, tenants):
    """On AWS a dedicated tenant's DB admin is its instance's RDS-managed master
    secret; the platform's admin (here a role that does not exist) is not used."""
    record, load = tenants["us-ded"]
    rds, secrets = box.client("rds"), box.client("secretsmanager")
    instance = rds.modify_db_instance(DBInstanceIdentifier=naming.rds_identifier(record.tenant_id),
                                      ManageMasterUserPassword=True, ApplyImmediately=True)["DBInstance"]
    admin = box.endpoints
    secrets.put_secret_value(SecretId=instance["MasterUserSecret"]["SecretArn"], SecretString=json.dumps(
        {"username": admin.pg_user, "password": admin.pg_password}))
    wrong = secrets.create_secret(Name="us-test/wrong-admin",
                                  SecretString=json.dumps({"username": "no_such_admin", "password": "x"}))["ARN"]
    clients = UsageClients(s3=box.client("s3"), sqs=box.client("sqs"),
                           admin_connect=admin_connector(secrets, wrong, rds=rds))
    dedicated = measure(record, clients)
    assert dedicated.errors == [] and dedicated.db.rows["context_items"] == load.context_items
    pooled = measure(tenants["us-small"][0], clients)
    assert pooled.db is None and pooled.errors[0].startswith("db:") and "no_such_admin" in pooled.errors[0]


def test_each_workspace_is_measured_apart_from_its_tenant(box, provision_tenant, workspace):
    record = provision_tenant("us-ws", workspaces=[{"name": "legal"}])
    legal = record.workspaces["legal"]
    with box.admin(legal.store.database) as conn, conn.transaction():
        conn.execute("SELECT set_config('app.tenant_id', %s, true)", (naming.OwnerNames("us-ws", "legal").key,))
        for c in range(3):
            conn.execute(sql.SQL("INSERT INTO {} (conversation_id) VALUES (%s)").format(
                sql.Identifier(legal.store.schema_name, "conversations")), (f"c{c}",))
    box.client("s3").put_object(Bucket=record.resources.bucket, Key=f"{legal.prefix}uploads/a.txt", Body=b"x" * 700,
                                ServerSideEncryption="aws:kms", SSEKMSKeyId=legal.kms_key_arn)

    usage = measure(record, clients_from_workspace(workspace))  # (the platform is up once a tenant is)
    ws = usage.workspaces["legal"]
    assert ws.errors == [] and usage.errors == []
    assert ws.db.scope == "schema" and ws.db.rows["conversations"] == 3 and ws.db.size_bytes > 0
    assert (ws.objects.current_objects, ws.objects.current_bytes) == (1, 700)
    assert ws.queues is not None  # its activity is the tenant's: the tenant itself did nothing
    assert usage.last_activity == max(t for t in (ws.db.last_write, ws.objects.last_modified) if t)
    assert usage.db.rows["conversations"] == 0 and usage.objects.current_objects == 0  # the tenant's own, apart


def test_cost_all_reads_the_registry_once_and_splits_each_platform_as_the_registry_counts(tenants, workspace):
    """The tenants `cost --all` prices are every active or suspended one: it splits each cell's platform over
    the pooled ones among them instead of a second scan of the registry for their count (5,000 records: 16
    Scans of 1 MB, not 8), and the split is the registry's own count."""
    from tenantctl.operations.usage import active_pooled, estimate_costs
    from tenantctl.usage.cost import load_prices

    expected = active_pooled(workspace)
    scans = []
    workspace.registry.client.meta.events.register("before-call.dynamodb.Scan", lambda **kw: scans.append(1))
    sum(1 for _ in workspace.registry.iter_all())
    one_pass, scans[:] = len(scans), []
    report = estimate_costs(workspace, load_prices(None), all_=True)
    assert len(scans) == one_pass
    assert all(f"split over {n} pooled tenant(s)" in " ".join(report.assumptions) for n in expected.values())


def test_usage_of_many_tenants_lists_each_bucket_once_with_the_same_figures(tenants, workspace):
    """`usage --all` / `cost --all` list a bucket's object versions once for all its tenants (pages of
    1,000), not once per tenant prefix: counted on the moto server, the figures each tenant's own
    listing gives, the other tenants' objects in the bucket (and a workspace's) kept out."""
    from tenantctl.operations.usage import measure_records, per_place
    from tenantctl.usage.measure import object_usage

    records = [record for record, _ in tenants.values()]
    place = per_place(workspace)
    listings: list[str] = []

    for s3 in {id(place(r).s3): place(r).s3 for r in records}.values():  # the call's own parameters
        s3.meta.events.register("before-parameter-build.s3.ListObjectVersions",
                                lambda params, **_: listings.append(params["Bucket"]))
    usages = measure_records(workspace, records, clients=place)
    assert len(listings) == len({r.resources.bucket for r in records}) < len(records), listings
    for record, usage in zip(records, usages, strict=True):
        assert not usage.errors, usage.errors
        assert usage.objects == object_usage(place(record).s3, record.resources.bucket, record.resources.prefix)


def test_usage_of_many_tenants_logs_in_once_per_store(tenants, workspace):
    """Over many tenants one after another (--parallel 1) each store's admin login is made once and kept
    (a dedicated store's apart: its login may be its own), not once per tenant; each tenant's figures as
    its own measurement gives them."""
    from tenantctl.operations.usage import measure_records, per_place

    records = [record for record, _ in tenants.values()]
    place = per_place(workspace)
    logins: list[str] = []
    for clients in {id(place(r)): place(r) for r in records}.values():
        def connect(record, login=clients.admin_connect):
            logins.append(record.tenant_id)
            return login(record)
        clients.admin_connect = connect
    usages = measure_records(workspace, records, clients=place, parallel=1)
    stores = {(r.resources.store.endpoint, r.resources.store.database,
               r.tenant_id if r.tier is Tier.dedicated else None) for r in records}
    assert len(logins) == len(stores) < len(records), logins
    for record, usage in zip(records, usages, strict=True):
        alone = measure(record, place(record))
        assert not usage.errors and usage.db.rows == alone.db.rows and usage.db.size_bytes == alone.db.size_bytes


def _unstamped(value):
    """``value`` without its measurement times (each tenant's ``measured_at``: when it was read)."""
    if isinstance(value, dict):
        return {k: _unstamped(v) for k, v in value.items() if k != "measured_at"}
    if isinstance(value, list):
        return [_unstamped(v) for v in value]
    return value


def test_usage_and_cost_of_many_tenants_are_the_same_measured_in_parallel(tenants, sandbox, project):
    """`usage --all` / `cost --all` measure tenants in threads (--parallel N): the same rows in the same
    order, the same figures and errors, as one tenant after another (--parallel 1)."""
    env = {**os.environ, "TENANTCTL_SANDBOX_DIR": str(sandbox.state_dir), "PYTHONWARNINGS": "ignore"}
    env.pop("TENANTCTL_TARGET", None)

    def cli(*args: str) -> dict:
        proc = subprocess.run([sys.executable, "-m", "tenantctl", *args, "--json"], cwd=project, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    for command in ("usage", "cost"):
        alone, threaded = cli(command, "--all", "--parallel", "1"), cli(command, "--all", "--parallel", "4")
        assert _unstamped(threaded) == _unstamped(alone), command
        listed = [t["estimate"] if command == "cost" else t for t in threaded["tenants"]]
        assert set(tenants) <= {t["tenant_id"] for t in listed}, command


def test_measured_in_threads_each_store_logs_in_at_most_once_per_thread(tenants, workspace):
    """With --parallel N each thread keeps its own admin connection to a store (a psycopg connection
    runs one transaction at a time): at most N logins per store, each tenant's figures as its own
    measurement gives them, in the records' order."""
    import threading

    from tenantctl.operations.usage import measure_records, per_place

    records = [record for record, _ in tenants.values()] * 3  # more tenants than threads, per store
    place = per_place(workspace)
    logins: list[tuple[str, str]] = []
    lock = threading.Lock()
    for clients in {id(place(r)): place(r) for r in records}.values():
        def connect(record, login=clients.admin_connect):
            with lock:
                logins.append((record.resources.store.database, threading.current_thread().name))
            return login(record)
        clients.admin_connect = connect
    usages = measure_records(workspace, records, clients=place, parallel=2)
    assert [u.tenant_id for u in usages] == [r.tenant_id for r in records]
    per_store = {db: [t for d, t in logins if d == db] for db, _ in logins}
    assert all(len(threads) <= 2 for threads in per_store.values()) and len(logins) < len(records), logins
    for record, usage in zip(records, usages, strict=True):
        alone = measure(record, place(record))
        assert not usage.errors and usage.db.rows == alone.db.rows and usage.queues == alone.queues
