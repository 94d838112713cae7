"""Search under the load a real application puts on it (sandbox: real
PostgreSQL, moto's KMS): concurrent writers of overlapping documents, cursor
pages read while the corpus changes, and input PostgreSQL cannot hold.
Tenant ids start with ``qs-`` (ids are shared by the whole test session)."""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager

import boto3
import psycopg
import pytest
from psycopg import sql

from tenant_runtime.documents import LARGE_BODY
from tenant_runtime.store import StoreOperations


@pytest.fixture(scope="module")
def tenant(runtime, provision_tenant):
    record = provision_tenant("qs-load")
    return record, runtime.context(record.tenant_id)


def counts_and_items(sandbox, record):
    """search_stats as kept, and as recounted from the items: {(kind, version, term): (items, length)}."""
    store = record.resources.store
    table = sql.Identifier(store.schema_name, "documents")
    stats = sql.Identifier(store.schema_name, "search_stats")
    with sql_admin(sandbox, store.database) as conn:
        kept = {(k, v, t): (n, ln) for k, v, t, n, ln in conn.execute(sql.SQL(
            "SELECT kind, key_version, term, items, length FROM {} WHERE kind = ANY('{{document,#document}}') "
            "AND items <> 0").format(stats)).fetchall()}
        recounted = {(k, v, t): (n, ln) for k, v, t, n, ln in conn.execute(sql.SQL(
            "SELECT 'document', key_version, x.term, count(*), 0 FROM {t} CROSS JOIN LATERAL unnest(terms, tfs) "
            "AS x(term, tf) WHERE x.tf > 0 GROUP BY 1, 2, 3 "
            "UNION ALL SELECT '#document', key_version, 0, count(*), sum(length) FROM {t} GROUP BY 1, 2, 3"
        ).format(t=table)).fetchall()}
    return kept, recounted


def sql_admin(sandbox, database):
    return psycopg.connect(sandbox.pg_dsn(database), autocommit=True)


def search_key_versions(sandbox, resources):
    """The search key versions in the store of ``resources`` (a tenant's or a workspace's)."""
    store = resources.store
    with sql_admin(sandbox, store.database) as conn:
        return [v for (v,) in conn.execute(sql.SQL("SELECT version FROM {} ORDER BY version").format(
            sql.Identifier(store.schema_name, "search_keys"))).fetchall()]


def test_concurrent_writers_of_the_same_documents_neither_deadlock_nor_skew_the_counts(runtime, tenant, sandbox):
    record, ctx = tenant
    failures: list[BaseException] = []

    def writer(n: int) -> None:
        # Every writer replaces the same documents, each in its own order and with its own words.
        ids = list(range(40))
        ids = ids[n % 2::2] + ids[1 - n % 2::2] if n % 2 else ids[::-1]
        try:
            for rnd in range(6):
                batch = ids[rnd * 5 % 40:][:20] or ids[:20]
                runtime.store.put_documents(ctx, [
                    {"doc_id": f"w{i:02d}", "title": f"writer {n}", "body": f"shared words{n}{rnd} common " * (1 + n)}
                    for i in batch])
                runtime.store.delete_document(ctx, f"w{(n * 7 + rnd) % 40:02d}")
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    kept, recounted = counts_and_items(sandbox, record)
    assert kept == recounted


@pytest.mark.parametrize("fuzzy", [False, True], ids=["words", "fuzzy"])
def test_cursor_pages_walk_the_first_pages_order_whatever_is_written_in_between(runtime, tenant, fuzzy):
    """Every write changes the corpus statistics (a document count, idf, the
    average length), so every score: pages after a write must still rank the
    documents that did not change as the first page did, each once."""
    _, ctx = tenant
    prefix = "fz" if fuzzy else "pg"
    runtime.store.put_documents(ctx, [
        {"doc_id": f"{prefix}{i:02d}", "title": f"page {i}", "body": "alpha " * (1 + i % 7) + "filler " * (i % 5),
         "metadata": {"set": prefix}} for i in range(30)])
    query = "alpha fillr" if fuzzy else "alpha filler"
    search = dict(filters={"set": prefix}, fuzzy=fuzzy)
    before = [h.doc_id for h in runtime.store.search(ctx, query, limit=100, **search).hits]
    assert len(before) == 30
    page = runtime.store.search(ctx, query, limit=8, **search)
    seen = [h.doc_id for h in page.hits]
    # Many new documents holding the words (idf up, average length down), one deleted, one rewritten.
    runtime.store.put_documents(ctx, [
        {"doc_id": f"{prefix}-new{i:02d}", "title": "new", "body": "omega" + " alpha" * (i % 2),
         "metadata": {"set": "other"}} for i in range(60)])
    deleted, rewritten = before[20], before[15]
    runtime.store.delete_document(ctx, deleted)
    runtime.store.put_document(ctx, rewritten, "rewritten", "alpha " * 9, {"set": prefix})
    while page.next_cursor:
        page = runtime.store.search(ctx, query, limit=8, cursor=page.next_cursor, **search)
        seen += [h.doc_id for h in page.hits]
    kept = [d for d in before if d not in (deleted, rewritten)]
    assert [d for d in seen if d in kept] == kept


def test_search_reindex_re_hashes_a_document_whose_body_is_in_s3(runtime, provision_tenant, tenantctl_cli, sandbox):
    record = provision_tenant("qs-large")
    ctx = runtime.context(record.tenant_id)
    runtime.store.put_document(ctx, "big", "Large handbook", "filler text " * (LARGE_BODY // 10) + "zebrafish", {})
    runtime.store.put_document(ctx, "small", "Small note", "a zebrafish note", {})
    done = tenantctl_cli("search", "reindex", record.tenant_id, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["documents"] == 2
    # One live key again, and every document found under it.
    assert {h.doc_id for h in runtime.store.search(ctx, "zebrafish").hits} == {"big", "small"}
    assert len(search_key_versions(sandbox, record.resources)) == 1


def test_search_reindex_wakes_a_hibernated_tenant_first(runtime, provision_tenant, tenantctl_cli, sandbox, workspace):
    record = provision_tenant("qs-sleep", tier="dedicated")
    runtime.store.put_document(runtime.context(record.tenant_id), "d", "Dormant", "a sleeping dormouse", {})
    assert tenantctl_cli("hibernate", record.tenant_id, "--force").returncode == 0
    rds = boto3.client("rds", endpoint_url=sandbox.aws_endpoint_url, region_name=sandbox.region)
    instance = workspace.registry.require(record.tenant_id).hibernation.db_instance

    done = tenantctl_cli("search", "reindex", record.tenant_id, "--json")
    assert done.returncode == 0, done.stderr
    assert f"starting database instance {instance}" in done.stderr
    assert rds.describe_db_instances(DBInstanceIdentifier=instance)["DBInstances"][0]["DBInstanceStatus"] == "available"
    assert workspace.registry.require(record.tenant_id).hibernation is None
    assert json.loads(done.stdout)["documents"] == 1


def test_search_reindex_rotates_each_workspaces_key_too(runtime, provision_tenant, tenantctl_cli, sandbox):
    record = provision_tenant("qs-ws", workspaces=[{"name": "fin"}])
    tenant, fin = runtime.context(record.tenant_id), runtime.context(record.tenant_id, "fin")
    runtime.store.put_document(tenant, "t1", "Tenant ledger", "the ledger of the tenant", {})
    runtime.store.put_document(fin, "f1", "Finance ledger", "the ledger of finance", {})
    fin_store = record.resources.workspaces["fin"]
    before = search_key_versions(sandbox, fin_store)

    done = tenantctl_cli("search", "reindex", record.tenant_id, "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["documents"] == 1 and result["workspaces"]["fin"]["documents"] == 1
    after = search_key_versions(sandbox, fin_store)
    assert after == [result["workspaces"]["fin"]["key_version"]] and after != before
    assert [h.doc_id for h in runtime.store.search(fin, "ledger").hits] == ["f1"]
    assert [h.doc_id for h in runtime.store.search(tenant, "ledger").hits] == ["t1"]
    again = tenantctl_cli("search", "reindex", record.tenant_id)
    assert "fin: 1 documents re-indexed" in again.stdout
    # Progress on stderr, a line per batch of each store.
    assert "re-indexed: 1 of 1 documents" in again.stderr
    assert "re-indexed workspace fin: 1 of 1 documents" in again.stderr


def test_facets_skip_a_null_value_and_count_the_others(runtime, tenant):
    _, ctx = tenant
    runtime.store.put_documents(ctx, [
        {"doc_id": "nul-1", "title": "t", "body": "quasar", "metadata": {"team": None, "set": "nul"}},
        {"doc_id": "nul-2", "title": "t", "body": "quasar", "metadata": {"team": "ops", "set": "nul"}},
        {"doc_id": "nul-3", "title": "t", "body": "quasar", "metadata": {"set": "nul"}}])
    res = runtime.store.search(ctx, "quasar", filters={"set": "nul"}, facets=["team", "set"])
    assert res.total == 3 and res.facets == {"team": {"ops": 1}, "set": {"nul": 3}}


def test_an_array_field_is_faceted_by_its_elements_as_its_filter_matches_them(runtime, tenant):
    """Tags are arrays: each element is a value of the facet (a document once per
    value, however often it repeats it), the value a filter on the array finds;
    scalars and objects count as before (an object as its JSON)."""
    _, ctx = tenant
    runtime.store.put_documents(ctx, [
        {"doc_id": "arr-1", "title": "t", "body": "nebula", "metadata": {"tags": ["db", "ops", "db"], "set": "arr"}},
        {"doc_id": "arr-2", "title": "t", "body": "nebula", "metadata": {"tags": ["ops", None, 7], "set": "arr"}},
        {"doc_id": "arr-3", "title": "t", "body": "nebula", "metadata": {"tags": "ops", "set": "arr"}},
        {"doc_id": "arr-4", "title": "t", "body": "nebula", "metadata": {"tags": [], "set": {"k": 1}}}])
    res = runtime.store.search(ctx, "nebula", facets=["tags", "set"])
    assert res.total == 4
    assert res.facets == {"tags": {"db": 1, "ops": 3, "7": 1}, "set": {"arr": 3, '{"k": 1}': 1}}
    for value, count in res.facets["tags"].items():
        if value != "7":
            found = runtime.store.search(ctx, "nebula", filters={"tags": [value]}).total
            assert found == count - (value == "ops"), value  # arr-3's tag is a string, not an array


def test_search_reindex_holds_the_tenants_lock(runtime, provision_tenant, tenantctl_cli, workspace):
    record = provision_tenant("qs-lock")
    runtime.store.put_document(runtime.context(record.tenant_id), "d", "Locked", "a padlock", {})
    with workspace.registry.hold(record.tenant_id, "provision"):  # another run on the tenant, alive
        busy = tenantctl_cli("search", "reindex", record.tenant_id, "--json")
    assert busy.returncode == 5, busy.stderr
    assert json.loads(busy.stdout)["error"]["code"] == 5 and "provision" in busy.stderr
    done = tenantctl_cli("search", "reindex", record.tenant_id, "--json")
    assert done.returncode == 0, done.stderr
    assert workspace.registry.require(record.tenant_id).lock is None


def documents_of(runtime, ctx):
    """Every document id of the tenant, page after page."""
    page = runtime.store.list_documents(ctx, limit=100)
    yield from (d.doc_id for d in page.documents)
    while page.next_cursor:
        page = runtime.store.list_documents(ctx, limit=100, cursor=page.next_cursor)
        yield from (d.doc_id for d in page.documents)


@contextmanager
def stopped_at_the_fifth_document(monkeypatch):
    """The block's reindex dies (KeyboardInterrupt, as a killed process) at its fifth document."""
    whole_body, opened = StoreOperations._whole_body, []

    def stopping(self, ctx, data):
        opened.append(1)
        if len(opened) == 5:
            raise KeyboardInterrupt
        return (yield from whole_body(self, ctx, data))

    with monkeypatch.context() as patched:
        patched.setattr(StoreOperations, "_whole_body", stopping)
        with pytest.raises(KeyboardInterrupt):
            yield


def test_a_reindex_stopped_half_way_is_finished_under_its_own_key(runtime, tenant, sandbox, monkeypatch):
    record, ctx = tenant
    runtime.store.reindex(ctx)  # the documents of the tests above under one key
    [old] = search_key_versions(sandbox, record.resources)
    total = sum(1 for _ in documents_of(runtime, ctx))
    answers = [(h.doc_id, h.score) for h in runtime.store.search(ctx, "alpha quasar", limit=100).hits]
    with stopped_at_the_fifth_document(monkeypatch):
        runtime.store.reindex(ctx)
    assert search_key_versions(sandbox, record.resources) == [old, old + 1]
    assert [(h.doc_id, h.score) for h in runtime.store.search(ctx, "alpha quasar", limit=100).hits] == answers

    done = runtime.store.reindex(ctx)
    assert (done.key_version, done.documents) == (old + 1, total - 4)
    assert search_key_versions(sandbox, record.resources) == [old + 1]
    assert [(h.doc_id, h.score) for h in runtime.store.search(ctx, "alpha quasar", limit=100).hits] == answers
    kept, recounted = counts_and_items(sandbox, record)
    assert kept == recounted


def test_status_says_a_reindex_is_unfinished_until_a_run_finishes_it(runtime, provision_tenant, tenantctl_cli,
                                                                      workspace, sandbox, monkeypatch):
    """A `search reindex` stopped half way leaves two live search keys (every
    query hashed under both) until a run finishes it: `status` says so, text
    and --json, from the registry record it reads anyway; and no longer once
    a run finished it. Before: nothing said so anywhere."""
    from tenantctl.operations.reindex import reindex_search

    record = provision_tenant("qs-stopped")
    tid = record.tenant_id
    runtime.store.put_documents(runtime.context(tid), [
        {"doc_id": f"u{i}", "title": "Unfinished", "body": "unfinished business", "metadata": {}} for i in range(8)])
    assert "unfinished" not in tenantctl_cli("status", tid).stdout
    with stopped_at_the_fifth_document(monkeypatch):
        reindex_search(workspace, tid)
    assert len(search_key_versions(sandbox, record.resources)) == 2
    shown = tenantctl_cli("status", tid, "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["search_reindex_since"], shown.stdout
    text = " ".join(tenantctl_cli("status", tid).stdout.split())
    assert "search reindex unfinished: a run started" in text, text
    assert f"`tenantctl search reindex {tid}` finishes it" in text

    done = tenantctl_cli("search", "reindex", tid)
    assert done.returncode == 0, done.stderr
    assert len(search_key_versions(sandbox, record.resources)) == 1
    assert json.loads(tenantctl_cli("status", tid, "--json").stdout)["search_reindex_since"] is None
    assert "unfinished" not in tenantctl_cli("status", tid).stdout


def test_a_nul_in_a_batch_with_a_large_body_is_refused_before_the_body_goes_to_s3(runtime, tenant, sandbox):
    """A NUL character (PostgreSQL's text and jsonb refuse it) in an id, a
    source or metadata of any document of a batch holding a large body is an
    InvalidRequest before any I/O: no object version or delete marker is left
    in the tenant's prefix. Before: the body was put in S3, the statement
    failed, the object was deleted (a delete marker and a noncurrent version
    left until the lifecycle expires them). An escaped ``\\u0000`` is text."""
    from tenant_runtime import InvalidRequest

    record, ctx = tenant
    res = record.resources
    s3 = boto3.client("s3", endpoint_url=sandbox.aws_endpoint_url, region_name=sandbox.region)

    def versions():
        listed = s3.list_object_versions(Bucket=res.bucket, Prefix=res.prefix)
        return sorted(v["VersionId"] for v in listed.get("Versions", []) + listed.get("DeleteMarkers", []))

    before = versions()
    big = {"doc_id": "nul-big", "title": "Large", "body": "x " * LARGE_BODY, "metadata": {}}
    plain = {"title": "t", "body": "b", "metadata": {}}
    for bad in ({**plain, "doc_id": "nul-value", "metadata": {"k": ["a\x00b"]}},
                {**plain, "doc_id": "nul-key", "metadata": {"n": {"a\x00": 1}}},
                {**plain, "doc_id": "nul\x00id"},
                {**plain, "doc_id": "nul-source", "source": "https://example.com/\x00"}):
        with pytest.raises(InvalidRequest, match="NUL"):
            runtime.store.put_documents(ctx, [big, bad])
    assert versions() == before and runtime.store.get_document(ctx, "nul-big") is None
    runtime.store.put_document(ctx, "nul-text", "t", "b", {"k": "\\u0000", "j": "\\\\u0000"})
    assert runtime.store.get_document(ctx, "nul-text").metadata == {"k": "\\u0000", "j": "\\\\u0000"}


@pytest.mark.parametrize("encrypted", [True, False], ids=["under-its-key", "unencrypted"])
def test_search_reindex_of_a_body_swapped_in_s3_is_an_integrity_failure(runtime, provision_tenant, tenantctl_cli,
                                                                         sandbox, encrypted):
    """A large body's object replaced in S3 (other bytes under the tenant's
    key, or an object not under it) fails the reindex with the documented
    integrity code, 9, naming the object, --json too; the other documents
    stay found. Before: `unexpected DecryptionFailed` / `InvalidRequest`, exit 1."""
    record = provision_tenant("qs-swapped")
    res, ctx = record.resources, runtime.context(record.tenant_id)
    runtime.store.put_document(ctx, "big", "Large", "filler " * (LARGE_BODY // 6) + "okapi", {})
    runtime.store.put_document(ctx, "small", "Small", "an okapi", {})
    s3 = boto3.client("s3", endpoint_url=sandbox.aws_endpoint_url, region_name=sandbox.region)
    [key] = [o["Key"] for o in s3.list_objects_v2(Bucket=res.bucket, Prefix=res.prefix + "documents/")["Contents"]]
    sse = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": res.kms_key_arn} if encrypted else {}
    s3.put_object(Bucket=res.bucket, Key=key, Body=b"swapped " * (LARGE_BODY // 7), **sse)

    failed = tenantctl_cli("search", "reindex", record.tenant_id, "--json")
    assert failed.returncode == 9, (failed.stdout, failed.stderr)
    error = json.loads(failed.stdout)["error"]
    assert error["code"] == 9 and key.removeprefix(res.prefix) in error["message"], error
    assert "unexpected" not in error["message"] and "changed since it was indexed" in error["message"]
    assert {h.doc_id for h in runtime.store.search(ctx, "okapi").hits} >= {"small"}
    # What the message says to do: the document written again, the reindex run again finishes.
    runtime.store.put_document(ctx, "big", "Large", "filler " * (LARGE_BODY // 6) + "okapi", {})
    finished = tenantctl_cli("search", "reindex", record.tenant_id)
    assert finished.returncode == 0, finished.stderr
    assert len(search_key_versions(sandbox, res)) == 1


def test_suggestions_complete_the_whole_prefix_past_its_indexed_length(runtime, tenant):
    _, ctx = tenant
    runtime.store.put_documents(ctx, [
        {"doc_id": "sg-1", "title": "Internationalization guide", "body": "i18n"},
        {"doc_id": "sg-2", "title": "International trade", "body": "trade"}])
    assert runtime.store.suggest(ctx, "internat") == ["international", "internationalization"]
    # Title prefixes are indexed up to 8 characters: the rest of the prefix must still match.
    assert runtime.store.suggest(ctx, "Internationali") == ["internationalization"]
    assert runtime.store.suggest(ctx, "internationalx") == []


def test_every_reindex_tenantctl_runs_marks_its_store_unfinished_until_it_finishes(
        runtime, provision_tenant, tenantctl_cli, workspace, sandbox, monkeypatch):
    """The registry's marker used to be `tenantctl search reindex`'s alone, one
    for the whole tenant: the rebuild `apply` runs finished a store's reindex
    and left the marker. Each store's reindex tenantctl runs now marks it before
    and clears it after success, and a store finished clears only its own mark.
    The runtime's own `store.reindex` writes nothing there (the registry is
    tenantctl's to write)."""
    from tenantctl.operations.reindex import rebuild_unindexed, reindex_search

    tid = provision_tenant("s3-marker").tenant_id
    added = tenantctl_cli("workspace", "add", tid, "legal", "--json")
    assert added.returncode == 0, added.stderr
    record = workspace.registry.require(tid)
    docs = [{"doc_id": f"m{i}", "title": "Marked", "body": "marked business", "metadata": {}} for i in range(8)]
    tenant_ctx, legal_ctx = runtime.context(tid), runtime.context(tid, workspace="legal")
    runtime.store.put_documents(tenant_ctx, docs)
    runtime.store.put_documents(legal_ctx, docs)

    def marker():
        shown = json.loads(tenantctl_cli("status", tid, "--json").stdout)
        return shown["search_reindex_since"], shown["search_reindex_stores"]

    with stopped_at_the_fifth_document(monkeypatch):
        runtime.store.reindex(tenant_ctx)  # the runtime's own API: two live keys, nothing in the registry
    assert len(search_key_versions(sandbox, record.resources)) == 2 and marker() == (None, [])
    runtime.store.reindex(tenant_ctx)  # finished under its key

    with stopped_at_the_fifth_document(monkeypatch):
        reindex_search(workspace, tid)  # every store marked at its start, the tenant's stopped
    since, stores = marker()
    assert since and stores == ["", "legal"], (since, stores)
    assert "search reindex unfinished" in " ".join(tenantctl_cli("status", tid).stdout.split())

    # The workspace's store rebuilt by the apply path (items in no index): its mark cleared, the tenant's kept.
    legal = record.resources.workspaces["legal"].store
    with sql_admin(sandbox, legal.database) as conn:
        conn.execute(sql.SQL("UPDATE {} SET terms = NULL, tfs = NULL").format(
            sql.Identifier(legal.schema_name, "documents")))
    with stopped_at_the_fifth_document(monkeypatch):
        rebuild_unindexed(workspace, workspace.registry.require(tid))
    assert marker() == (since, ["", "legal"])
    _, rebuilt = rebuild_unindexed(workspace, workspace.registry.require(tid))
    assert set(rebuilt) == {"legal"}  # the tenant's store holds no unindexed item: counted only
    assert marker() == (since, [""])

    done = tenantctl_cli("search", "reindex", tid, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["documents"] == 4  # the four the stopped run had not re-hashed
    assert len(search_key_versions(sandbox, record.resources)) == 1
    assert marker() == (None, [])
    assert "unfinished" not in tenantctl_cli("status", tid).stdout
