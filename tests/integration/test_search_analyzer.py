"""The analyzer that built a store's search index is recorded in the store
(``search_analyzers``: one row per search key) and compared on use (sandbox:
real PostgreSQL, moto's KMS): a runtime with the Japanese extra and one
without it never mix their terms in one index unnoticed. "Without the extra"
is this process with ``analyzer.japanese_tokenizer`` answering None, as it
does when SudachiPy is not installed. Tenant ids start with ``sr8-``."""

from __future__ import annotations

import asyncio
import json

import psycopg
import pytest
from psycopg import sql
from runtime_tenants import sandbox_runtime

from tenant_runtime import AnalyzerUnavailable, analyzer


@pytest.fixture(scope="module")
def ja_tenant(runtime, provision_tenant):
    record = provision_tenant("sr8-ja")
    return record, runtime.context(record.tenant_id)


@pytest.fixture(scope="module")
def plain_tenant(runtime, provision_tenant):
    record = provision_tenant("sr8-plain", workspaces=[{"name": "fin"}])
    return record, runtime.context(record.tenant_id)


def without_the_extra(monkeypatch) -> None:
    monkeypatch.setattr(analyzer, "japanese_tokenizer", lambda: None)


def recorded(sandbox, resources) -> dict[int, str]:
    """{search key version: analyzer} as the store of ``resources`` records them."""
    store = resources.store
    with psycopg.connect(sandbox.pg_dsn(store.database), autocommit=True) as conn:
        return dict(conn.execute(sql.SQL("SELECT key_version, analyzer FROM {} ORDER BY 1").format(
            sql.Identifier(store.schema_name, "search_analyzers"))).fetchall())


def found(runtime, ctx, query: str) -> list[str]:
    return sorted(h.doc_id for h in runtime.store.search(ctx, query).hits)


def test_the_identity_names_the_format_and_the_japanese_dictionary():
    assert analyzer.identity().startswith(f"v{analyzer.FORMAT}+ja:sudachidict")  # the test extra is installed


def test_the_first_write_records_the_analyzer_that_built_the_index(runtime, ja_tenant, sandbox):
    record, ctx = ja_tenant
    runtime.store.put_document(ctx, "d1", "Key rotation", "keys rotate 検索が速く", {})
    assert recorded(sandbox, record.resources) == {1: analyzer.identity()}


def test_a_runtime_without_the_extra_refuses_to_write_into_an_index_built_with_it(runtime, ja_tenant, monkeypatch):
    _, ctx = ja_tenant
    without_the_extra(monkeypatch)
    with pytest.raises(AnalyzerUnavailable) as refused:
        runtime.store.put_document(ctx, "d2", "Another", "written without the extra", {})
    message = str(refused.value)
    assert "tenantctl search reindex sr8-ja" in message
    assert f"v{analyzer.FORMAT}+ja:sudachidict" in message and f"runs v{analyzer.FORMAT}" in message
    assert refused.value.status_code == 503 and refused.value.code == "analyzer_unavailable"
    assert runtime.store.get_document(ctx, "d2") is None
    with pytest.raises(AnalyzerUnavailable):
        runtime.store.put_documents(ctx, [{"doc_id": "d3", "title": "t", "body": "b"}])


def test_a_search_by_a_runtime_that_cannot_cut_the_query_as_the_index_is_flagged(runtime, ja_tenant, monkeypatch):
    _, ctx = ja_tenant
    with_extra = runtime.store.search(ctx, "rotate")
    assert ([h.doc_id for h in with_extra.hits], with_extra.analyzer_mismatch) == (["d1"], False)
    without_the_extra(monkeypatch)
    without = runtime.store.search(ctx, "rotate")
    # Latin words are cut alike: still found, but the answer says it may miss what Japanese words would find.
    assert ([h.doc_id for h in without.hits], without.analyzer_mismatch) == (["d1"], True)


def test_suggestions_are_flagged_as_searches_are(runtime, ja_tenant, sandbox, workspace, monkeypatch):
    """``suggest`` says ``analyzer_mismatch`` with the search's meaning, from the sync and the async API."""
    from runtime_tenants import jwt_settings

    from tenant_runtime import AsyncTenantRuntime

    _, ctx = ja_tenant
    with_extra = runtime.store.suggest(ctx, "ke")
    assert (with_extra, with_extra.analyzer_mismatch) == (["key"], False)
    without_the_extra(monkeypatch)
    without = runtime.store.suggest(ctx, "ke")
    assert (without, without.analyzer_mismatch) == (["key"], True)
    assert runtime.store.suggest(ctx, "k").analyzer_mismatch is False  # too short to look anything up

    async def through_async() -> tuple[list[str], bool]:
        async with AsyncTenantRuntime(jwt_settings(), workspace.ensure_platform()["registry_table"],
                                      endpoint_url=sandbox.aws_endpoint_url, region=sandbox.region) as art:
            found = await art.store.suggest(await art.context(ctx.tenant_id), "ke")
            return list(found), found.analyzer_mismatch

    assert asyncio.run(through_async()) == (["key"], True)


def test_a_runtime_with_the_extra_writes_and_searches_an_index_built_without_it_as_it_was_built(
        runtime, plain_tenant, sandbox, monkeypatch):
    record, ctx = plain_tenant
    with monkeypatch.context() as m:
        without_the_extra(m)
        runtime.store.put_document(ctx, "old", "会議", "東京都の会議", {})
    assert recorded(sandbox, record.resources) == {1: f"v{analyzer.FORMAT}"}
    # This runtime has SudachiPy ("速く" -> 速い) but the index is of bigrams: written and searched as bigrams.
    runtime.store.put_document(ctx, "new", "検索", "検索が速く", {})
    assert recorded(sandbox, record.resources) == {1: f"v{analyzer.FORMAT}"}
    answer = runtime.store.search(ctx, "速く")
    assert ([h.doc_id for h in answer.hits], answer.analyzer_mismatch) == (["new"], False)
    assert found(runtime, ctx, "速い") == []  # SudachiPy's dictionary form: not a bigram of the text
    with monkeypatch.context() as m:
        without_the_extra(m)
        answer = runtime.store.search(ctx, "速く")
        assert ([h.doc_id for h in answer.hits], answer.analyzer_mismatch) == (["new"], False)
        assert found(runtime, ctx, "会議") == ["old"]


def test_search_reindex_records_the_analyzer_it_used_in_every_store(runtime, plain_tenant, sandbox, tenantctl_cli):
    record, ctx = plain_tenant
    fin = runtime.context(record.tenant_id, "fin")
    runtime.store.put_document(fin, "f1", "Ledger", "finance ledger", {})
    assert recorded(sandbox, record.resources.workspaces["fin"]) == {1: analyzer.identity()}

    done = tenantctl_cli("search", "reindex", record.tenant_id, "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["analyzer"] == analyzer.identity() == result["workspaces"]["fin"]["analyzer"]
    assert recorded(sandbox, record.resources) == {result["key_version"]: analyzer.identity()}
    assert recorded(sandbox, record.resources.workspaces["fin"]) == {
        result["workspaces"]["fin"]["key_version"]: analyzer.identity()}
    # Rebuilt with SudachiPy: its dictionary forms are found ("速く" indexed as 速い).
    assert found(runtime, ctx, "速い") == ["new"]
    again = tenantctl_cli("search", "reindex", record.tenant_id)
    fin_key = result["workspaces"]["fin"]["key_version"] + 1
    assert f"sr8-plain/fin: 1 documents re-indexed under search key v{fin_key}, analyzer {analyzer.identity()}" \
        in again.stdout
    assert not runtime.store.search(ctx, "会議").analyzer_mismatch


def test_a_stopped_reindex_by_another_analyzer_is_not_finished_under_its_key(runtime, plain_tenant, sandbox,
                                                                           monkeypatch):
    record, ctx = plain_tenant
    [old] = recorded(sandbox, record.resources)
    store = record.resources.store
    # A reindex without the extra made its key and stopped before re-hashing anything (its row, as it left it).
    with psycopg.connect(sandbox.pg_dsn(store.database), autocommit=True) as conn:
        conn.execute(sql.SQL("INSERT INTO {keys} SELECT tenant_id, %s, sealed, now() FROM {keys}").format(
            keys=sql.Identifier(store.schema_name, "search_keys")), (old + 1,))
        conn.execute(sql.SQL("INSERT INTO {} (tenant_id, key_version, analyzer) VALUES (%s, %s, %s)").format(
            sql.Identifier(store.schema_name, "search_analyzers")), (record.tenant_id, old + 1, f"v{analyzer.FORMAT}"))
        conn.execute(sql.SQL("INSERT INTO {} (tenant_id, kind, key_version, term, items) "
                             "VALUES (%s, '', %s, 0, 0)").format(
            sql.Identifier(store.schema_name, "search_stats")), (record.tenant_id, old + 1))
    done = runtime.store.reindex(ctx)
    assert (done.key_version, done.analyzer) == (old + 2, analyzer.identity())
    assert recorded(sandbox, record.resources) == {old + 2: analyzer.identity()}
    assert found(runtime, ctx, "速い") == ["new"]


def test_an_index_from_before_identities_is_taken_as_built_without_the_extra(
        runtime, short_lived_tenant, sandbox, workspace, monkeypatch):
    record = short_lived_tenant("sr8-ded", tier="dedicated")
    store = record.resources.store
    runtime.store.put_document(runtime.context(record.tenant_id), "old", "Old", "an old note", {})
    with psycopg.connect(sandbox.pg_dsn(store.database), autocommit=True) as conn:  # as a store from before
        conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(store.schema_name, "search_analyzers")))
    with sandbox_runtime(sandbox, workspace) as fresh:
        ctx = fresh.context(record.tenant_id)
        fresh.store.put_document(ctx, "new", "検索", "検索が速く", {})  # bigrams, as the extra-less default
        assert recorded(sandbox, record.resources) == {}
        without_the_extra(monkeypatch)
        answer = fresh.store.search(ctx, "速く")
        assert ([h.doc_id for h in answer.hits], answer.analyzer_mismatch) == (["new"], False)


def test_an_index_of_the_format_before_accent_folding_stays_as_built_until_reindexed(
        runtime, provision_tenant, sandbox, monkeypatch):
    record = provision_tenant("sr8-fold")
    ctx = runtime.context(record.tenant_id)
    with monkeypatch.context() as m:  # a runtime of the release before: format 1, accents kept
        m.setattr(analyzer, "FORMAT", 1)
        runtime.store.put_document(ctx, "old", "Café", "crème brûlée", {})
    [(version, built)] = recorded(sandbox, record.resources).items()
    assert built.startswith("v1+") and analyzer.identity().startswith(f"v{analyzer.FORMAT}+")
    # Written and searched as format 1 (no accent folding), so both kinds of words agree, unflagged.
    runtime.store.put_document(ctx, "new", "Crème", "café au lait", {})
    answer = runtime.store.search(ctx, "café")
    assert (sorted(h.doc_id for h in answer.hits), answer.analyzer_mismatch) == (["new", "old"], False)
    assert found(runtime, ctx, "cafe") == []

    done = runtime.store.reindex(ctx)
    assert recorded(sandbox, record.resources) == {version + 1: analyzer.identity()} == {
        done.key_version: done.analyzer}
    assert found(runtime, ctx, "cafe") == found(runtime, ctx, "CAFÉ") == ["new", "old"]
    assert runtime.store.suggest(ctx, "cre") == ["crème"]  # completions keep the accents of the titles


def test_a_format_2_index_keeps_its_marks_until_its_reindex_folds_them(runtime, provision_tenant, sandbox):
    """Format 3 folds Hebrew points and Arabic harakat: a store built by a format-2 runtime
    is written and searched as format 2 (pointed and bare words apart, unflagged) until a reindex."""
    record = provision_tenant("sr8-marks")
    ctx = runtime.context(record.tenant_id)
    with pytest.MonkeyPatch.context() as m:  # a runtime of the release before: format 2
        m.setattr(analyzer, "FORMAT", 2)
        runtime.store.put_document(ctx, "he", "שָׁלוֹם", "שָׁלוֹם עוֹלָם", {})
    [(version, built)] = recorded(sandbox, record.resources).items()
    assert built.startswith("v2+") and analyzer.identity().startswith("v3+")
    runtime.store.put_document(ctx, "ar", "كِتَاب", "كِتَابٌ جَدِيدٌ", {})  # written by this runtime as format 2
    answer = runtime.store.search(ctx, "שָׁלוֹם")
    assert ([h.doc_id for h in answer.hits], answer.analyzer_mismatch) == (["he"], False)
    assert found(runtime, ctx, "שלום") == found(runtime, ctx, "كتاب") == []  # v2: the marks kept

    done = runtime.store.reindex(ctx)
    assert recorded(sandbox, record.resources) == {version + 1: analyzer.identity()} == {
        done.key_version: done.analyzer}
    assert found(runtime, ctx, "שלום") == found(runtime, ctx, "שָׁלוֹם") == ["he"]
    assert found(runtime, ctx, "كتاب") == found(runtime, ctx, "كِتَابٌ") == ["ar"]
    assert runtime.store.suggest(ctx, "שָׁל") == ["שָׁלוֹם"]  # completions as the titles write them


def test_a_store_whose_schema_predates_the_analyzer_table_is_served_as_an_index_from_before_identities(
        runtime, provision_tenant, sandbox, workspace, monkeypatch):
    """A runtime of this release deployed before ``apply`` ran the schema template
    again: the store has no ``search_analyzers`` table. Its index, built by a
    runtime before identities, is searched and written as ``v1`` (as a store with
    the table and no row); a store with no key yet refuses its first document with
    a 503 saying what to run, not psycopg's UndefinedTable (a 500 on every search
    and write). Before: UndefinedTable raised from each."""
    from tenant_runtime import StoreUnavailable

    built, empty = provision_tenant("sr8-pre"), provision_tenant("sr8-pre-empty")
    with monkeypatch.context() as m:  # a runtime of the release before: format 1, accents kept
        m.setattr(analyzer, "FORMAT", 1)
        runtime.store.put_document(runtime.context(built.tenant_id), "old", "Café", "crème brûlée", {})

    def rename(record, old: str, new: str) -> None:
        store = record.resources.store
        with psycopg.connect(sandbox.pg_dsn(store.database), autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(
                sql.Identifier(store.schema_name, old), sql.Identifier(new)))

    for record in (built, empty):
        rename(record, "search_analyzers", "search_analyzers_later")
    try:
        with sandbox_runtime(sandbox, workspace) as fresh:
            ctx = fresh.context(built.tenant_id)
            fresh.store.put_document(ctx, "new", "Crème", "café au lait", {})
            answer = fresh.store.search(ctx, "café")
            assert (sorted(h.doc_id for h in answer.hits), answer.analyzer_mismatch) == (["new", "old"], False)
            assert found(fresh, ctx, "cafe") == [] and fresh.store.suggest(ctx, "crè") == ["crème"]

            ctx = fresh.context(empty.tenant_id)
            with pytest.raises(StoreUnavailable, match="search_analyzers.*tenantctl apply"):
                fresh.store.put_document(ctx, "first", "First", "a first note", {})
            assert fresh.store.search(ctx, "note").hits == []
    finally:
        for record in (built, empty):
            rename(record, "search_analyzers_later", "search_analyzers")
