"""`tenantctl search reindex --all | --cell C | ID... [--outdated]`: the fleet's
search indexes moved to this installation's analyzer (sandbox: real
PostgreSQL, moto's KMS), the upgrade path after deploying runtimes of a new
analyzer format. Tenant ids start with ``rx8-``; the registry is the
session's, so `--all` meets other modules' tenants too: the assertions are
about this module's."""

from __future__ import annotations

import json
import re

import boto3
import psycopg
import pytest
from psycopg import sql

from tenant_runtime import analyzer
from tenantctl.operations.suspend import suspend

OLD, CURRENT, OFF = "rx8-old", "rx8-cur", "rx8-off"


def recorded(sandbox, resources) -> dict[int, str]:
    """{search key version: analyzer} as the store of ``resources`` records them."""
    store = resources.store
    with psycopg.connect(sandbox.pg_dsn(store.database), autocommit=True) as conn:
        return dict(conn.execute(sql.SQL("SELECT key_version, analyzer FROM {} ORDER BY 1").format(
            sql.Identifier(store.schema_name, "search_analyzers"))).fetchall())


@pytest.fixture(scope="module")
def fleet(runtime, provision_tenant, workspace, sandbox):
    """rx8-old: a store from before identities (written by a format-1 runtime, its
    ``search_analyzers`` rows gone); rx8-cur: written by this runtime; rx8-off: suspended."""
    records = {t: provision_tenant(t) for t in (OLD, CURRENT, OFF)}
    with pytest.MonkeyPatch.context() as m:  # a runtime of the release before: format 1, accents kept
        m.setattr(analyzer, "FORMAT", 1)
        runtime.store.put_document(runtime.context(OLD), "old", "Café", "crème brûlée", {})
    store = records[OLD].resources.store
    with psycopg.connect(sandbox.pg_dsn(store.database), autocommit=True) as conn:  # as a store from before
        conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(store.schema_name, "search_analyzers")))
    runtime.store.put_document(runtime.context(CURRENT), "new", "Café", "café au lait", {})
    suspend(workspace, OFF)
    return records


def mine(rows: list[dict]) -> dict[str, dict]:
    return {r["tenant_id"]: r for r in rows if r["tenant_id"].startswith("rx8-")}


def test_all_outdated_reindexes_only_the_stores_of_another_analyzer(fleet, runtime, sandbox, tenantctl_cli):
    ctx = runtime.context(OLD)
    assert recorded(sandbox, fleet[OLD].resources) == {}
    assert [h.doc_id for h in runtime.store.search(ctx, "cafe").hits] == []  # v1: accents kept

    done = tenantctl_cli("search", "reindex", "--all", "--outdated", "--json")
    out = json.loads(done.stdout)
    assert done.returncode == out["exit_code"], done.stderr
    assert not mine(out["failed"]), out["failed"]
    reindexed = mine(out["tenants"])
    assert list(reindexed) == [OLD]
    assert reindexed[OLD]["analyzer"] == analyzer.identity() and reindexed[OLD]["documents"] == 1
    assert recorded(sandbox, fleet[OLD].resources) == {reindexed[OLD]["key_version"]: analyzer.identity()}
    assert [h.doc_id for h in runtime.store.search(ctx, "cafe").hits] == ["old"]  # found by its unaccented form
    # `status` says which analyzer the reindex built with, from the record alone; one never reindexed: none yet.
    shown = json.loads(tenantctl_cli("status", OLD, "--json").stdout)
    assert (shown["search_analyzers"], shown["search_analyzers_outdated"]) == ({"": analyzer.identity()}, [])
    text = tenantctl_cli("status", CURRENT).stdout
    assert re.search(r"search analyzer +the tenant's own: none yet: no `tenantctl search reindex` has finished",
                     text), text

    skipped = {t: r["reason"] for t, r in mine(out["skipped"]).items()}
    assert skipped == {CURRENT: f"up to date (analyzer {analyzer.identity()})",
                       OFF: "suspended: only an active tenant is reindexed"}
    assert out["counts"]["reindexed"] == len(out["tenants"]) and out["counts"]["skipped"] == len(out["skipped"])
    assert f"{OLD}: re-indexed" in done.stderr  # a stamped line per tenant
    # The plan counts the tenants it reads, not those it then finds up to date: it checks them.
    [plan] = [line for line in done.stderr.splitlines() if " plan: " in line]
    assert re.search(r"plan: (\d+) tenant\(s\), (\d+) skipped; checking \1 tenant\(s\)$", plan), plan

    again = tenantctl_cli("search", "reindex", "--all", "--outdated", "--json")
    out = json.loads(again.stdout)
    assert again.returncode == out["exit_code"] and out["tenants"] == [], again.stderr
    assert mine(out["skipped"])[OLD]["reason"] == f"up to date (analyzer {analyzer.identity()})"


def test_named_tenants_are_reindexed_and_one_locked_fails_with_exit_5(fleet, workspace, tenantctl_cli):
    with workspace.registry.hold(CURRENT, "provision"):  # another run on the tenant, alive
        busy = tenantctl_cli("search", "reindex", CURRENT, OLD, OFF, "--parallel", "2", "--json")
    assert busy.returncode == 5, busy.stderr
    out = json.loads(busy.stdout)
    assert [t["tenant_id"] for t in out["tenants"]] == [OLD]
    [failed] = out["failed"]
    assert (failed["tenant_id"], failed["exit_code"]) == (CURRENT, 5) and "provision" in failed["error"]
    assert out["skipped"] == [{"tenant_id": OFF, "reason": "suspended: only an active tenant is reindexed"}]
    assert out["counts"] == {"tenants": 3, "reindexed": 1, "skipped": 1, "failed": 1} and out["exit_code"] == 5
    assert "plan: 2 tenant(s), 1 skipped; re-indexing 2 tenant(s)" in busy.stderr  # not the suspended one

    human = tenantctl_cli("search", "reindex", CURRENT, OLD)
    assert human.returncode == 0, human.stderr
    assert "2 of 2 tenant(s) re-indexed" in human.stdout


@pytest.mark.parametrize("args", [[CURRENT, "--all"], [], ["--all", "--cell", "default"], ["--all", "--parallel", "0"]])
def test_bad_usage_is_exit_2(args, tenantctl_cli):
    assert tenantctl_cli("search", "reindex", *args).returncode == 2


@pytest.mark.parametrize("outdated", [False, True])
def test_a_tenant_suspended_since_the_listing_is_skipped_not_failed(fleet, workspace, outdated):
    """Listed active, suspended before its turn: a skip saying why, as at listing time (not exit 3 or 7)."""
    from tenantctl.models import TenantStatus
    from tenantctl.operations.fleet_reindex import Skipped, reindex_one

    as_listed = workspace.registry.require(OFF).model_copy(update={"status": TenantStatus.active})
    assert reindex_one(workspace, as_listed, outdated) == Skipped(
        tenant_id=OFF, reason="suspended: only an active tenant is reindexed")


def test_a_hibernated_tenant_is_left_asleep(short_lived_tenant, workspace, sandbox, tenantctl_cli):
    """As `drill run --all` leaves it: its instance stays stopped; `search reindex ID` wakes it.
    One that hibernated after the run listed it awake is left so too, under its lock."""
    from tenantctl.operations.fleet_reindex import Skipped, _asleep, reindex_one
    from tenantctl.operations.reindex import reindex_search

    sleeper = short_lived_tenant("rx8-sleep", tier="dedicated").tenant_id
    assert tenantctl_cli("hibernate", sleeper, "--force").returncode == 0
    instance = workspace.registry.require(sleeper).hibernation.db_instance
    rds = boto3.client("rds", endpoint_url=sandbox.aws_endpoint_url, region_name=sandbox.region)

    done = tenantctl_cli("search", "reindex", sleeper, CURRENT, "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert [t["tenant_id"] for t in out["tenants"]] == [CURRENT]
    assert out["skipped"] == [{"tenant_id": sleeper, "reason": "hibernated: its database instance is stopped; "
                               f"`tenantctl search reindex {sleeper}` wakes it and reindexes it"}]
    assert reindex_search(workspace, sleeper, wake=False) is None
    # Listed awake, hibernated before its turn: skipped as asleep, its analyzers not read (no exit 7).
    as_listed = workspace.registry.require(sleeper).model_copy(update={"hibernation": None})
    for outdated in (False, True):
        assert reindex_one(workspace, as_listed, outdated) == Skipped(tenant_id=sleeper, reason=_asleep(sleeper))
    after = workspace.registry.require(sleeper)
    assert after.hibernation is not None and (after.lock, after.last_error) == (None, None)
    assert rds.describe_db_instances(DBInstanceIdentifier=instance)["DBInstances"][0]["DBInstanceStatus"] == "stopped"
