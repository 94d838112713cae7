"""`apply` planning: shards, match, fingerprints, exit codes, the pull-request
summary, and the worker pool's crash isolation (no engine needed)."""

import os
import time
from types import SimpleNamespace

import pytest

from tenantctl.engines.base import Op, PropertyDiff, ResourceChange
from tenantctl.errors import CHANGES_PENDING, InvalidInput, UsageError
from tenantctl.fingerprint import applied_hash
from tenantctl.models import CellSpec, TenantRecord, TenantSpec, TenantStatus, Tier
from tenantctl.operations.apply import (
    Action,
    ApplySummary,
    CellResult,
    TenantResult,
    in_shard,
    matches,
    parse_shard,
    plan,
    run_pool,
)
from tenantctl.stackconfig import stack_file, stack_of, write_cell, write_tenant
from tenantctl.templates import render

IDS = [f"tenant-{i:03d}" for i in range(200)]


@pytest.mark.parametrize("total", [1, 2, 3, 4, 7])
def test_shards_are_disjoint_cover_all_and_deterministic(total):
    owners = {t: [i for i in range(1, total + 1) if in_shard(t, i, total)] for t in IDS}
    assert all(len(v) == 1 for v in owners.values())
    again = {t: [i for i in range(1, total + 1) if in_shard(t, i, total)] for t in IDS}
    assert owners == again
    if total > 1:  # a hash split, not everything on one runner
        assert len({v[0] for v in owners.values()}) == total


@pytest.mark.parametrize("text", ["0/4", "5/4", "a/b", "1", "1/0"])
def test_bad_shard_is_a_usage_error(text):
    with pytest.raises(UsageError, match="Invalid value for '--shard'") as refused:
        parse_shard(text)
    assert refused.value.exit_code == 2  # a malformed argument, as the parser's own


def summary(preview, *results):
    return ApplySummary(preview=preview, shard="1/1", seconds=1.0, results=list(results))


def test_exit_codes():
    same = TenantResult(tenant_id="a", action=Action.unchanged)
    new = TenantResult(tenant_id="b", action=Action.create)
    bad = TenantResult(tenant_id="c", action=Action.update, ok=False, error="boom")
    assert summary(True, same).exit_code() == 0
    assert summary(True, same, new).exit_code() == CHANGES_PENDING == 12  # never 2, a usage error
    assert summary(True, same, new, bad).exit_code() == 1
    assert summary(False, same, new).exit_code() == 0
    assert summary(False, new, bad).exit_code() == 1


def test_markdown_summary_names_failures_and_orphans():
    text = render("apply_summary.md.j2", summary=summary(
        False,
        TenantResult(tenant_id="acme", action=Action.create, reason="not in the registry", changes={"create": 12}),
        TenantResult(tenant_id="beta", action=Action.update, ok=False, error="KMS | throttled"),
        TenantResult(tenant_id="gamma", action=Action.unchanged),
        TenantResult(tenant_id="old", action=Action.orphan),
    ))
    assert "**1 failed**" in text
    assert "| `acme` | create | ok | not in the registry | create 12 |" in text
    assert "KMS \\| throttled" in text
    assert "1 unchanged tenant(s) skipped" in text
    assert "`old`" in text and "--prune --yes" in text


def _queue_change() -> ResourceChange:
    return ResourceChange(op=Op.update, type="aws:sqs/queue:Queue", name="acme-queue", diffs=[
        PropertyDiff(path="delaySeconds", old=0, new=30)])


def test_markdown_preview_lists_each_resource_with_its_changed_properties():
    key = ResourceChange(op=Op.replace, type="aws:kms/key:Key", name="acme-key", diffs=[
        PropertyDiff(path="keyUsage", old="ENCRYPT_DECRYPT", new="SIGN_VERIFY")])
    policy = ResourceChange(op=Op.update, type="aws:iam/rolePolicy:RolePolicy", name="acme-access", diffs=[
        PropertyDiff(path="policy.Statement[0].Resource", old="a|b", new="x" * 400)])
    text = render("apply_summary.md.j2", summary=summary(
        True,
        TenantResult(tenant_id="acme", action=Action.update, reason="spec or program changed since the last apply",
                     changes={"update": 2, "replace": 1, "same": 9}, resources=[_queue_change(), policy, key]),
        TenantResult(tenant_id="same", action=Action.unchanged)))
    assert "| `acme` | update | ok | spec or program changed since the last apply | update 2, replace 1 |" in text
    assert "| update | `acme-queue` | `aws:sqs/queue:Queue` | `delaySeconds`: `0` → `30` |" in text
    assert "`policy.Statement[0].Resource`: `a\\|b` → `" + "x" * 160 + "…`" in text  # pipes escaped, long cut
    assert "| replace :warning: | `acme-key` |" in text and "replaced: its data is lost" in text
    assert ":rotating_light: **data-bearing resources replaced or deleted**: `acme` (replace `acme-key`)" in text
    assert "same 9" not in text and "\n\n\n" not in text


def test_markdown_of_a_repair_shows_the_drift_and_the_orphans():
    from tenantctl.operations.refresh import Orphan

    drift = ResourceChange(op=Op.update, type="aws:sqs/queue:Queue", name="acme-queue", diffs=[
        PropertyDiff(path="delaySeconds", old=0, new=600)])
    orphan = Orphan(arn="arn:aws:sqs:r:1:tenantctl-acme-extra", kind="sqs", name="tenantctl-acme-extra",
                    removable=True, removed="deleted")
    result = TenantResult(tenant_id="acme", action=Action.repair, reason="drift: 1 changed, 1 orphan(s)",
                          changes={"update": 1}, resources=[_queue_change()], drift=[drift], orphans=[orphan])
    text = render("apply_summary.md.j2", summary=summary(False, result).model_copy(update={"refresh": True}))
    assert "### tenantctl apply --refresh" in text and "Drift found (recorded → live), repaired:" in text
    assert "`delaySeconds`: `0` → `600`" in text and "- orphan resource `sqs` `tenantctl-acme-extra`: deleted" in text


def test_a_repair_whose_orphan_removal_failed_fails_and_still_reports_what_it_did(ws, monkeypatch):
    from tenantctl.engines.base import ChangeSet, UpResult
    from tenantctl.operations import apply as apply_module
    from tenantctl.operations import provision as provision_module
    from tenantctl.operations.refresh import Orphan, removal_failures

    key = Orphan(arn="arn:aws:kms:r:1:key/6a1f", kind="kms:key", name="6a1f", removable=True,
                 removed="scheduled for deletion in 30 days")
    role = Orphan(arn="arn:aws:iam::1:role/tenantctl-acme-spare", kind="iam:role", name="tenantctl-acme-spare",
                  removable=True, error="An error occurred (DeleteConflict): in use")
    up = provision_module.Provisioned(**UpResult(stack="acme", outputs={}, changes=ChangeSet(
        stack="acme", changes=[_queue_change()])).model_dump(), orphans=[key, role])

    def provision(ws, spec, refresh=False):
        raise provision_module.OrphansNotRemoved(record("acme"), up, removal_failures(up.orphans))

    monkeypatch.setattr(provision_module, "provision", provision)
    write_tenant(ws.stacks_dir, TenantSpec(id="acme"))
    result = apply_module._apply_one(ws, "acme", Action.repair, preview=False, record=None, refresh=True)
    assert not result.ok and "tenant 'acme' is active, but 1 orphan resource(s) could not be removed" in result.error
    assert "iam:role tenantctl-acme-spare (An error occurred (DeleteConflict): in use)" in result.error
    assert result.orphans == [key, role] and result.changes == {"update": 1}  # what it did is still reported
    done = summary(False, result)
    assert done.exit_code() == 1
    text = render("apply_summary.md.j2", summary=done)
    assert "- orphan resource `kms:key` `6a1f`: scheduled for deletion in 30 days" in text
    assert "- orphan resource `iam:role` `tenantctl-acme-spare`: removal failed: An error occurred" in text


def test_a_cell_stack_leads_the_summary_and_counts_in_the_exit_code():
    bucket = ResourceChange(op=Op.update, type="aws:s3/bucket:Bucket", name="shared-bucket", diffs=[
        PropertyDiff(path="tags.owner", old="platform", new="team-eu")])
    cell = CellResult(cell="eu1", action=Action.update, reason="spec or program changed since its last up",
                      changes={"update": 1, "same": 40}, resources=[bucket])
    same = TenantResult(tenant_id="acme", action=Action.unchanged)
    preview = summary(True, same).model_copy(update={"cells": [cell]})
    assert preview.exit_code() == CHANGES_PENDING and [r.name for r in preview.pending] == ["cell eu1"]
    text = render("apply_summary.md.j2", summary=preview)
    assert ":warning: **1 stack(s) with changes pending**" in text
    assert "| `cell eu1` | update | ok | spec or program changed since its last up | update 1 |" in text
    assert "| update | `shared-bucket` | `aws:s3/bucket:Bucket` | `tags.owner`: `platform` → `team-eu` |" in text
    failed = summary(False, same).model_copy(update={"cells": [cell.model_copy(update={"ok": False, "error": "x"})]})
    assert failed.exit_code() == 1 and "**1 failed**" in render("apply_summary.md.j2", summary=failed)


# -- planning from stack files + registry records (no engine, no registry service) --


def record(spec_or_id, status=TenantStatus.active, project=None, **fields):
    tid = spec_or_id if isinstance(spec_or_id, str) else spec_or_id.id
    spec_hash = applied_hash(spec_or_id, project) if project is not None else ""
    return TenantRecord(tenant_id=tid, tier=Tier.pooled, status=status, region="us-east-1",
                        spec_hash=spec_hash, **fields)


@pytest.fixture
def ws(tmp_path):
    (tmp_path / "stacks").mkdir()
    write_cell(tmp_path / "stacks", CellSpec())
    # No cell to reconcile: apply's cell stacks are tested on the sandbox (test_apply_cells.py).
    return SimpleNamespace(project_dir=tmp_path, stacks_dir=tmp_path / "stacks", committed_cells=lambda only=None: {})


def test_plan_actions_and_reasons(ws):
    same, edited, new, failed = (TenantSpec(id=t) for t in ("same", "edited", "new", "failed"))
    for spec in (same, edited, new, failed):
        write_tenant(ws.stacks_dir, spec)
    stack_file(ws.stacks_dir, "broken").write_text("config:\n  tenantctl:tenant: {id: broken, tier: gold}\n")
    records = {
        "same": record(same, project=ws.project_dir),
        "edited": record(TenantSpec(id="edited", owner="someone-else"), project=ws.project_dir),
        "failed": record(failed, status=TenantStatus.provisioning, project=ws.project_dir, last_error="KMS throttled"),
        "orphan": record("orphan"),
        "gone": record("gone", status=TenantStatus.deprovisioned),
    }
    got = {r.tenant_id: r for r in plan(ws, (1, 1), records)}
    assert "platform" not in got and "gone" not in got
    assert {t: r.action for t, r in got.items()} == {
        "same": Action.unchanged, "edited": Action.update, "new": Action.create,
        "failed": Action.update, "broken": Action.invalid, "orphan": Action.orphan}
    assert got["edited"].reason == "spec or program changed since the last apply"
    assert got["failed"].reason == "registry status provisioning (last error: KMS throttled)"
    assert not got["broken"].ok and "tier" in got["broken"].error
    assert got["new"].reason == "not in the registry"

    pruned = {r.tenant_id: r.action for r in plan(ws, (1, 1), records, prune=True)}
    assert pruned["orphan"] is Action.prune


def test_plan_per_cell_and_a_cell_change_is_refused(ws):
    write_cell(ws.stacks_dir, CellSpec(name="eu1", region="eu-west-1"))
    placed = TenantSpec(id="eu-a", region="eu-west-1", cell="eu1")
    unpinned = TenantSpec(id="eu-b", region="eu-west-1")  # CI did not commit the placement back
    home, moved, fresh = TenantSpec(id="home"), TenantSpec(id="moved", cell="eu1"), TenantSpec(id="fresh", cell="eu1")
    for spec in (placed, unpinned, home, moved, fresh):
        write_tenant(ws.stacks_dir, spec)
    records = {
        "eu-a": record(placed, project=ws.project_dir, cell="eu1"),
        "eu-b": record(unpinned, project=ws.project_dir, cell="eu1"),
        "home": record(home, project=ws.project_dir),
        "moved": record(moved, project=ws.project_dir),  # lives in the default cell
        "eu-gone": record("eu-gone", cell="eu1"),
    }
    assert "cell-eu1" not in {r.tenant_id for r in plan(ws, (1, 1), records)}  # a cell's stack is no tenant
    got = {r.tenant_id: r for r in plan(ws, (1, 1), records, cell="eu1")}
    # The cell is not part of the fingerprint: placed or not in the file, an unchanged tenant is skipped.
    assert {t: r.action for t, r in got.items()} == {
        "eu-a": Action.unchanged, "eu-b": Action.unchanged, "fresh": Action.create, "eu-gone": Action.orphan}
    everyone = {r.tenant_id: r for r in plan(ws, (1, 1), records)}
    assert everyone["moved"].action is Action.invalid and "do not change cells in place" in everyone["moved"].error


def test_a_tenants_second_stack_is_neither_a_tenant_nor_an_orphan(ws):
    """A move to another account or region leaves two stacks of one tenant
    (`acme`, `acme.k1`) while it is open, and `acme.k1` alone after it: the
    plan reads the one the record names, and never sees tenant `acme.k1`."""
    old, moved = TenantSpec(id="acme"), TenantSpec(id="acme", region="eu-west-1")
    write_tenant(ws.stacks_dir, old)
    write_tenant(ws.stacks_dir, moved, stack="acme.k1")
    write_tenant(ws.stacks_dir, TenantSpec(id="done"), stack="done.k2")
    records = {"acme": record(moved, project=ws.project_dir, stack="acme.k1"),
               "done": record(TenantSpec(id="done"), project=ws.project_dir, stack="done.k2")}
    got = {r.tenant_id: r.action for r in plan(ws, (1, 1), records)}
    assert got == {"acme": Action.unchanged, "done": Action.unchanged}
    # The record names the second stack: the first one's spec would be a change.
    records["acme"] = record(old, project=ws.project_dir, stack="acme.k1")
    assert {r.tenant_id: r.action for r in plan(ws, (1, 1), records)}["acme"] is Action.update


def test_a_tombstoned_id_is_refused_naming_the_way_back_while_there_is_one():
    from datetime import timedelta

    from tenantctl.models import utcnow
    from tenantctl.registry import refusal

    now = utcnow()
    kept = record("gone", status=TenantStatus.deprovisioned, deprovisioned_at=now,
                  retain_until=now + timedelta(days=14))
    said = str(refusal(kept, TenantSpec(id="gone")))
    assert "never reused" in said and "`tenantctl drill restore gone --target in-place --yes`" in said, said
    assert f"until {kept.retain_until:%Y-%m-%d}" in said
    over = kept.model_copy(update={"retain_until": now - timedelta(days=1)})
    said = str(refusal(over, TenantSpec(id="gone")))
    assert "retention window ended" in said and "drill restore" not in said, said


def test_plan_refuses_what_the_run_would_refuse(ws):
    """A stack file of a tombstoned tenant, or one moving tiers, is an error in the
    plan (so in a preview too), not a green update that then fails on main."""
    for spec in (TenantSpec(id="gone"), TenantSpec(id="moving", tier="dedicated"), TenantSpec(id="busy")):
        write_tenant(ws.stacks_dir, spec)
    from tenantctl.models import TenantLock

    records = {"gone": record("gone", status=TenantStatus.deprovisioned), "moving": record("moving"),
               "busy": record("busy", lock=TenantLock(operation="provision", owner="x", host="h", pid=1))}
    got = {r.tenant_id: r for r in plan(ws, (1, 1), records)}
    assert got["gone"].action is Action.invalid and not got["gone"].ok
    assert "tombstoned" in got["gone"].error and "never reused" in got["gone"].error
    assert got["moving"].action is Action.invalid and "tenantctl move moving" in got["moving"].error
    # A lock is a run in progress, not a refusal of this change.
    assert got["busy"].action is Action.update and got["busy"].ok
    assert summary(True, *got.values()).exit_code() == 1


def test_plan_match_scopes_files_and_records(ws):
    for tid in ("team-a-one", "team-b-one"):
        write_tenant(ws.stacks_dir, TenantSpec(id=tid))
    records = {"team-a-old": record("team-a-old"), "team-b-old": record("team-b-old")}
    got = {r.tenant_id: r.action for r in plan(ws, (1, 1), records, match=["team-a-*"])}
    assert got == {"team-a-one": Action.create, "team-a-old": Action.orphan}
    assert matches("x", []) and matches("ab", ["zz", "a*"]) and not matches("ab", ["b*"])


def test_plan_shards_cover_files_and_records(ws):
    ids = [f"t-{i:02d}" for i in range(30)]
    for tid in ids[:20]:
        write_tenant(ws.stacks_dir, TenantSpec(id=tid))
    records = {tid: record(tid) for tid in ids[10:]}
    shards = [{r.tenant_id for r in plan(ws, (i, 3), records)} for i in (1, 2, 3)]
    assert sum(map(len, shards)) == 30 and set().union(*shards) == set(ids)


def test_a_program_change_changes_the_fingerprint(tmp_path):
    from tenantctl.fingerprint import program_fingerprint

    spec = TenantSpec(id="acme")
    (tmp_path / "infra").mkdir()
    (tmp_path / "infra" / "program.py").write_text("A = 1\n")
    before = applied_hash(spec, tmp_path)
    program_fingerprint.cache_clear()
    (tmp_path / "infra" / "program.py").write_text("A = 2\n")
    assert applied_hash(spec, tmp_path) != before
    assert applied_hash(spec, tmp_path) != applied_hash(TenantSpec(id="acme", owner="x"), tmp_path)
    program_fingerprint.cache_clear()


def test_a_cell_default_the_tenant_takes_is_in_its_fingerprint(tmp_path):
    """A pooled tenant's logins take its cell's connection limit: a change there
    re-applies it; one with its own limit, or a dedicated one, is unchanged."""
    pooled, own, dedicated = TenantSpec(id="a"), TenantSpec(id="b", db_connection_limit=4), TenantSpec(
        id="c", tier="dedicated")
    cell, raised = CellSpec(), CellSpec(db_connection_limit=25)
    assert applied_hash(pooled, tmp_path, cell=cell) == applied_hash(pooled, tmp_path)  # the default either way
    assert applied_hash(pooled, tmp_path, cell=raised) != applied_hash(pooled, tmp_path, cell=cell)
    for spec in (own, dedicated):
        assert applied_hash(spec, tmp_path, cell=raised) == applied_hash(spec, tmp_path, cell=cell)
    # Its alarm topics' subscriptions: every tenant of the cell takes them.
    subscribed = CellSpec(alarm_subscriptions=[{"protocol": "sqs", "endpoint": "arn:aws:sqs:us-east-1:123456789012:q"}])
    for spec in (pooled, own, dedicated):
        assert applied_hash(spec, tmp_path, cell=subscribed) != applied_hash(spec, tmp_path, cell=cell)


# -- the process pool: a worker that dies fails its own tenant only --

def crashing_worker(project_dir, cwd, yes, tenant_id, action, preview, record):
    """Runs in a spawned process (module-level, so it pickles by reference);
    says which stack the plan's record it was given names."""
    if tenant_id == "crash":
        os._exit(3)
    time.sleep(0.1)
    return TenantResult(tenant_id=tenant_id, action=Action(action), changes={"create": 1},
                        reason=stack_of(tenant_id, record))


def test_a_dead_worker_fails_only_its_own_tenant():
    ids = ["a", "b", "crash", "c", "d"]
    records = {"b": record("b", stack="b.k1"), "d": record("d", stack="d.k2")}  # re-run after the crash too
    got: list[TenantResult] = []
    run_pool([TenantResult(tenant_id=t, action=Action.create) for t in ids], ("/p", "/p", False), False, 2,
             got.append, records, worker=crashing_worker)
    by_id = {r.tenant_id: r for r in got}
    assert sorted(by_id) == sorted(ids) and len(got) == len(ids)
    assert not by_id["crash"].ok and "worker process died" in by_id["crash"].error
    assert all(by_id[t].ok and by_id[t].changes == {"create": 1} for t in "abcd")
    assert {t: by_id[t].reason for t in "abcd"} == {"a": "a", "b": "b.k1", "c": "c", "d": "d.k2"}


def test_apply_runs_each_tenant_on_the_plans_record_without_reading_it_again(ws, monkeypatch):
    """The plan read every record in one scan: the tenant's work finds its stack
    (a finished move's `<id>.k1`) there; only provision's own reservation reads."""
    from tenantctl.engines.base import ChangeSet
    from tenantctl.operations import apply as apply_op
    from tenantctl.operations import provision as provision_op

    write_tenant(ws.stacks_dir, TenantSpec(id="moved", owner="team-k1"), stack="moved.k1")
    write_tenant(ws.stacks_dir, TenantSpec(id="fresh"))
    records = [record("moved", stack="moved.k1", cell="default")]
    gets: list[str] = []
    ws.cwd, ws.ensure_platform = ws.project_dir, dict
    ws.registry = SimpleNamespace(fleet=lambda: (records, []), get=gets.append)
    provisioned: dict[str, TenantSpec] = {}

    def provision(ws_, spec, refresh=None):
        provisioned[spec.id] = spec
        return None, SimpleNamespace(changes=ChangeSet(stack=spec.id, changes=[]), drift=[], orphans=[])

    monkeypatch.setattr(provision_op, "provision", provision)
    done = apply_op.apply(ws, parallel=1)
    assert {r.tenant_id: (r.action, r.ok) for r in done.results} == {
        "fresh": (Action.create, True), "moved": (Action.update, True)}, [r.error for r in done.results]
    assert gets == []
    assert provisioned["moved"].owner == "team-k1"  # from Pulumi.moved.k1.yaml
    assert not stack_file(ws.stacks_dir, "moved").exists()


def test_a_missing_or_empty_desired_state_is_refused(tmp_path, ws):
    from tenantctl.operations.apply import apply, check_scope

    nowhere = SimpleNamespace(project_dir=tmp_path / "x", stacks_dir=tmp_path / "x" / "stacks")
    with pytest.raises(InvalidInput, match="does not exist"):
        apply(nowhere)
    # Only the platform stack file: pruning would remove every tenant.
    with pytest.raises(InvalidInput, match="--prune is refused, as it would deprovision every tenant in the registry"):
        apply(ws, prune=True)
    write_tenant(ws.stacks_dir, TenantSpec(id="team-a-one"))
    # Scoped: what is refused is the registry's tenants of that scope, not all of them.
    with pytest.raises(InvalidInput) as err:
        check_scope(ws, prune=True, match=["team-b-*"])
    assert "holds no tenant stack file matching team-b-*" in str(err.value)
    assert "deprovision every tenant of the registry matching team-b-* (check the --match globs" in str(err.value)
    assert "in the registry" not in str(err.value)
    check_scope(ws, prune=True, match=["team-a-*"])
    check_scope(ws, prune=False, match=["team-b-*"])


def test_the_engine_prepares_once_before_the_worker_pool(ws, monkeypatch):
    """The PulumiEngine installs its provider plugins there: concurrent first-use
    downloads of one plugin collide (pulumi/pulumi#22784)."""
    from tenantctl.operations import apply as apply_op

    order: list[str] = []
    for t in ("a", "b"):
        write_tenant(ws.stacks_dir, TenantSpec(id=t))
    ws.cwd, ws.ensure_platform = ws.project_dir, dict
    ws.registry = SimpleNamespace(fleet=lambda: ([], []))
    ws.engine = SimpleNamespace(prepare=lambda: order.append("prepare"))
    monkeypatch.setattr(apply_op, "run_pool", lambda todo, *args, **kw: order.append(f"pool of {len(todo)}") or [])
    # Placement reads the registry's cells, which this fake registry has not.
    monkeypatch.setattr(apply_op, "_placed_in_turn", lambda *args: (set(), set()))
    apply_op.apply(ws, preview=True, parallel=2)
    assert order == ["prepare", "pool of 2"]


def test_a_search_rebuild_put_off_makes_the_tenant_an_update_once_it_can_run(ws):
    """A provision whose rebuild failed (or found the tenant suspended) left it
    owed: the next apply runs it, without re-applying a suspended tenant every time."""
    from runtime_fixtures import record as applied

    resources = applied("owed").resources
    for tenant_id in ("owed", "asleep", "done"):
        write_tenant(ws.stacks_dir, TenantSpec(id=tenant_id))
    records = {
        "owed": record(TenantSpec(id="owed"), project=ws.project_dir, resources=resources, search_rebuild_due=True),
        "asleep": record(TenantSpec(id="asleep"), TenantStatus.suspended, project=ws.project_dir,
                         resources=resources, search_rebuild_due=True),
        "done": record(TenantSpec(id="done"), project=ws.project_dir, resources=resources),
    }
    got = {r.tenant_id: r for r in plan(ws, (1, 1), records)}
    assert {t: r.action for t, r in got.items()} == {
        "owed": Action.update, "asleep": Action.unchanged, "done": Action.unchanged}
    assert got["owed"].reason == "search index rebuild due after a schema upgrade"


def test_a_cell_with_a_counter_and_no_stack_file_is_an_orphan_the_home_never():
    from tenantctl.operations.apply_cells import orphan_cells

    committed = {"eu1": CellSpec(name="eu1", region="eu-west-1")}
    found = orphan_cells(["default", "eu1", "gone"], committed)
    assert [(c.cell, c.action, c.ok) for c in found] == [("gone", Action.orphan, True)]
    assert "`tenantctl cell remove gone`" in found[0].reason
    assert orphan_cells(["default"], {}) == []  # the home cell's file is written on first use


def test_a_failed_provision_is_applied_again_until_one_succeeds(ws):
    """A provision records the tenant active with its fingerprint, then runs the
    posture check: a check that fails leaves that fingerprint with the failure,
    and the next apply must run it again (a red run never turns green by
    itself). A note of checks that could not run, or another operation's
    failure, is no reason to."""
    for tenant_id in ("checked", "interrupted", "noted", "drilled", "legacy", "repaired"):
        write_tenant(ws.stacks_dir, TenantSpec(id=tenant_id))

    def applied(tenant_id, **fields):
        return record(TenantSpec(id=tenant_id), project=ws.project_dir, **fields)

    records = {
        "checked": applied("checked", last_error="tenant 'checked' posture check: fail aws/kms-rotation: off",
                           provision_failed=True),
        "interrupted": applied("interrupted", last_error="provision interrupted: its pid is gone",
                               provision_failed=True),
        "noted": applied("noted", last_error="tenant 'noted' posture check: error db/rls: unreachable",
                         provision_failed=False),
        "drilled": applied("drilled", last_error="drill restore of b-1: verification failed", provision_failed=False),
        # Written before failures were told from notes: no provision_failed in its item at all.
        "legacy": TenantRecord.model_validate_json(applied("legacy", last_error="posture check: fail").model_dump_json(
            exclude={"provision_failed"})),
        "repaired": applied("repaired", last_error=None, provision_failed=False),  # the run after the fix
    }
    got = {r.tenant_id: r for r in plan(ws, (1, 1), records)}
    assert {t: r.action for t, r in got.items()} == {
        "checked": Action.update, "interrupted": Action.update, "noted": Action.unchanged,
        "drilled": Action.unchanged, "legacy": Action.update, "repaired": Action.unchanged}
    assert got["checked"].reason == ("the last provision failed (last error: tenant 'checked' posture check: "
                                     "fail aws/kms-rotation: off)")
    assert got["checked"].ok and summary(False, *got.values()).exit_code() == 0  # planned, not failed yet


def test_the_registry_keeps_a_failed_provision_until_a_provision_succeeds(monkeypatch):
    """What `plan` reads: a failed provision's hold (or a dead provision's lock)
    sets ``provision_failed``; another operation, failed or not, leaves it; a
    provision that succeeds clears it, even with a note in ``last_error``."""
    from runtime_fixtures import record as applied

    from tenantctl.errors import PolicyViolation
    from tenantctl.models import TenantLock
    from tenantctl.registry import RegistryWriter

    stored: dict[str, TenantRecord] = {}
    writer = RegistryWriter.__new__(RegistryWriter)
    monkeypatch.setattr(writer, "_put", lambda r, version: stored.__setitem__(r.tenant_id, r) or r, raising=False)
    monkeypatch.setattr(writer, "get", lambda tenant_id: stored.get(tenant_id), raising=False)
    monkeypatch.setattr(writer, "lock_for", lambda tenant_id, operation, status=None: writer._put(
        stored[tenant_id].model_copy(update={"lock": TenantLock(operation=operation, owner="o", host="h", pid=1)}),
        None), raising=False)
    stored["acme"] = record(TenantSpec(id="acme"))

    def flag() -> tuple[bool, str | None]:
        return stored["acme"].provision_failed, stored["acme"].last_error

    with pytest.raises(PolicyViolation), writer.hold("acme", "provision"):
        raise PolicyViolation("posture check: fail")
    assert flag() == (True, "posture check: fail") and stored["acme"].lock is None
    with writer.hold("acme", "drill-restore"):
        pass
    assert flag() == (True, None)
    with pytest.raises(PolicyViolation), writer.hold("acme", "wake"):
        raise PolicyViolation("instance stuck")
    assert flag() == (True, "instance stuck")
    active = writer.mark_active(stored["acme"], applied("acme").resources, TenantSpec(id="acme"), "1", "h")
    writer.release(active, error="posture check: error db/rls: unreachable")  # a note of a provision that succeeded
    assert flag() == (False, "posture check: error db/rls: unreachable")

    # A provision whose lock is cleared never finished: a dead one's, or one removed with `unlock --force`.
    dead = TenantLock(operation="provision", owner="o", host="h", pid=1)
    monkeypatch.setattr("tenantctl.registry.lock_holder", lambda lock: "gone")
    assert writer.clear_dead_lock(stored["acme"].model_copy(update={"lock": dead})).provision_failed
    monkeypatch.setattr(writer, "require", lambda tenant_id: stored[tenant_id], raising=False)
    stored["acme"] = stored["acme"].model_copy(update={"provision_failed": False, "lock": dead})
    assert writer.force_unlock("acme").provision_failed
    stored["acme"] = stored["acme"].model_copy(update={"provision_failed": False, "lock": dead.model_copy(
        update={"operation": "hibernate"})})
    assert not writer.force_unlock("acme").provision_failed


def test_a_key_generation_file_no_move_opened_is_refused(ws):
    """`<id>.k<N>` is a move's target stack: of a tenant not in the registry, or
    with no open move to it, it is refused by name (never read as the tenant's,
    never a create of a stack the run cannot find); the tenant's own file is
    planned as ever."""
    from runtime_fixtures import record as applied

    from tenant_runtime.models import MovePhase, TenantMove

    write_tenant(ws.stacks_dir, TenantSpec(id="zeta"), stack="zeta.k1")  # no zeta.yaml, no record
    acme = TenantSpec(id="acme")
    write_tenant(ws.stacks_dir, acme)
    write_tenant(ws.stacks_dir, acme, stack="acme.k1")  # acme is not moving
    write_tenant(ws.stacks_dir, TenantSpec(id="lost"))  # its record names lost.k1, whose file is gone
    moving = TenantSpec(id="moving")
    write_tenant(ws.stacks_dir, moving)
    write_tenant(ws.stacks_dir, moving.model_copy(update={"region": "eu-west-1"}), stack="moving.k1")
    store = applied("moving").resources.store
    records = {
        "acme": record(acme, project=ws.project_dir),
        "lost": record("lost", stack="lost.k1"),
        "moving": record(moving, project=ws.project_dir, move=TenantMove(
            from_tier=Tier.pooled, to_tier=Tier.pooled, from_cell="default", to_cell="eu1", old_store=store,
            to_stack="moving.k1", phase=MovePhase.copying)),
    }
    got = {r.tenant_id: r for r in plan(ws, (1, 1), records)}
    assert {t: r.action for t, r in got.items()} == {
        "acme": Action.unchanged, "acme.k1": Action.invalid, "zeta.k1": Action.invalid, "lost": Action.invalid,
        "moving": Action.invalid}  # the open move refuses a provision; its second stack is no stray
    assert "tenant 'zeta' is not in the registry" in got["zeta.k1"].error
    assert "written by `tenantctl move`" in got["zeta.k1"].error and "Pulumi.zeta.yaml" in got["zeta.k1"].error
    assert "tenant 'acme' has no open move to it (its stacks: acme)" in got["acme.k1"].error
    assert "names stack 'lost.k1', whose file Pulumi.lost.k1.yaml is not in stacks/" in got["lost"].error
    assert "being moved" in got["moving"].error
    assert not any(r.ok for t, r in got.items() if t != "acme")
    # Only the tenants of the run's cell: a stray file of a tenant not in the registry belongs to none.
    assert {r.tenant_id for r in plan(ws, (1, 1), records, cell="eu1")} == set()


def test_an_open_moves_tenant_is_left_to_the_move_while_its_file_is_as_the_move_wrote_it(ws):
    """A move (a cell evacuation's too) owns its tenant for its rollback window:
    `apply` reports it moving, unchanged and no failure, while the file the
    record names is the one the move wrote (or, a stack the move did not write,
    the one last applied); an edit of it meanwhile is refused as before."""
    from datetime import UTC, datetime

    from runtime_fixtures import record as applied

    from tenant_runtime.models import MovePhase, TenantMove

    store = applied("m").resources.store
    window = datetime(2026, 12, 7, 9, 30, tzinfo=UTC)
    written = TenantSpec(id="mv", owner="team-a")  # as the move wrote it
    write_tenant(ws.stacks_dir, written)
    keyed = TenantSpec(id="mk")  # a keyed move not switched yet: its own stack as last applied
    write_tenant(ws.stacks_dir, keyed)
    write_tenant(ws.stacks_dir, keyed.model_copy(update={"region": "eu-west-1"}), stack="mk.k1")
    edited = TenantSpec(id="me", owner="team-b")  # written by the move for team-a, edited since
    write_tenant(ws.stacks_dir, edited)

    def move(**fields):
        return TenantMove(from_tier=Tier.pooled, to_tier=Tier.pooled, from_cell="default", to_cell="eu1",
                          old_store=store, **fields)

    records = {
        "mv": record(written, project=ws.project_dir, move=move(
            phase=MovePhase.switched, window_ends_at=window, stack_digests={"mv": written.content_hash()})),
        "mk": record(keyed, project=ws.project_dir, spec_digest=keyed.content_hash(), move=move(
            phase=MovePhase.copying, to_stack="mk.k1", stack_digests={"mk.k1": "x"})),
        "me": record(edited, project=ws.project_dir, move=move(
            phase=MovePhase.switched, stack_digests={"me": written.model_copy(update={"id": "me"}).content_hash()})),
    }
    got = {r.tenant_id: r for r in plan(ws, (1, 1), records)}
    assert {t: (r.action, r.ok) for t, r in got.items()} == {
        "mv": (Action.unchanged, True), "mk": (Action.unchanged, True), "me": (Action.invalid, False)}
    assert got["mv"].reason == ("moving (switched, rollback window until 2026-12-07 09:30Z): "
                                "`tenantctl move mv --finalize` (or `--rollback`) ends it")
    assert got["mk"].reason.startswith("moving (copying): ")
    assert "being moved" in got["me"].error


def test_an_edit_outside_the_spec_makes_the_file_invalid_not_unchanged(ws):
    """The fingerprint is the spec's: a file whose region or other keys say
    something else is refused by the plan (the program would refuse it, or
    apply would never deploy it), not skipped as unchanged."""
    specs = {t: TenantSpec(id=t) for t in ("region", "bogus", "profile", "commented")}
    for spec in specs.values():
        write_tenant(ws.stacks_dir, spec)
    edit = {"region": ("aws:region: us-east-1", "aws:region: eu-west-1"),
            "bogus": ("config:\n", "config:\n  tenantctl:bogus: 1\n"),
            "profile": ("config:\n", "config:\n  aws:profile: prod\n"),
            "commented": ("config:\n", "# owned by team-a\nconfig:  # reviewed\n")}
    for tenant_id, (old, new) in edit.items():
        path = stack_file(ws.stacks_dir, tenant_id)
        path.write_text(path.read_text().replace(old, new))
    records = {t: record(spec, project=ws.project_dir) for t, spec in specs.items()}
    got = {r.tenant_id: r for r in plan(ws, (1, 1), records)}
    assert {t: r.action for t, r in got.items()} == {
        "region": Action.invalid, "bogus": Action.invalid, "profile": Action.invalid, "commented": Action.unchanged}
    assert "aws:region 'eu-west-1' is not the tenant's region 'us-east-1'" in got["region"].error
    assert "config key(s) `tenantctl:bogus`" in got["bogus"].error
    assert "config key(s) `aws:profile`" in got["profile"].error
    assert got["region"].reason == "stack file refused"


def test_a_failed_stack_is_reported_as_failed_whatever_its_action(monkeypatch, capsys, tmp_path):
    """A live read that failed leaves a stack `unchanged` but failed: the
    progress, the table, its last line and the markdown comment all name it
    with its error; it is not counted among the skipped."""
    import typer

    import tenantctl.workspace
    from tenantctl.cli import apply_cmd
    from tenantctl.operations import apply as apply_op

    cell = CellResult(cell="eu1", action=Action.unchanged, ok=False, error="refresh failed: state [unreadable]",
                      reason="refresh")
    globex = TenantResult(tenant_id="globex", action=Action.unchanged, ok=False, reason="refresh",
                          error="refresh failed: AccessDenied in eu-west-1")
    acme = TenantResult(tenant_id="acme", action=Action.unchanged)
    done = ApplySummary(preview=False, refresh=True, shard="1/1", seconds=1.0, cells=[cell], results=[acme, globex])

    def run(ws, on_plan=None, **options):
        on_plan([cell], [acme, globex])
        return done

    monkeypatch.setattr(apply_op, "apply", run)
    monkeypatch.setattr(tenantctl.workspace, "Workspace", lambda: None)
    md = tmp_path / "summary.md"
    with pytest.raises(typer.Exit) as exited:
        apply_cmd.apply(refresh=True, markdown=md)
    assert exited.value.exit_code == 1
    out, err = capsys.readouterr()
    assert "globex: unchanged failed: refresh failed: AccessDenied in eu-west-1" in err
    assert "cell eu1: unchanged failed: refresh failed: state [unreadable]" in err
    rows = [" ".join(line.split()) for line in out.splitlines()[2:4]]
    assert rows == ["cell eu1 unchanged failed: refresh failed: state [unreadable] refresh",  # brackets: text
                    "globex unchanged failed: refresh failed: AccessDenied in eu-west-1 refresh"]
    assert "acme" not in out and out.rstrip().endswith("2 unchanged; 2 failed")

    text = md.read_text()
    assert ":x: **2 failed**" in text
    assert "| `globex` | unchanged | **failed**: refresh failed: AccessDenied in eu-west-1 | refresh |  |" in text
    assert "| `cell eu1` | unchanged | **failed**: refresh failed: state [unreadable] | refresh |  |" in text
    assert "1 unchanged tenant(s) skipped (read live: no drift)" in text


@pytest.mark.parametrize("failure", [PermissionError("posture check: fail aws/kms-rotation"), KeyboardInterrupt()])
def test_a_tenant_recorded_active_then_not_verified_is_a_failed_provision(monkeypatch, failure):
    """`activate` (a provision's, a move's finalize, a revive's) records the
    tenant active with its fingerprint before its posture check: a check that
    fails or is interrupted leaves ``provision_failed`` for `apply`, whichever
    command's hold then records the error."""
    from runtime_fixtures import record as applied

    import tenantctl.checks
    from tenantctl.engines.base import ChangeSet, UpResult
    from tenantctl.operations.provision import Applied, activate

    saved: list[dict] = []
    active = record("acme")
    ws = SimpleNamespace(registry=SimpleNamespace(mark_active=lambda *a, **kw: active,
                                                  save=lambda r, **changes: saved.append(changes)))

    def check(ws_, record_, applied_):
        raise failure

    monkeypatch.setattr(tenantctl.checks, "verify_provisioned", check)
    done = Applied(resources=applied("acme").resources,
                   result=UpResult(stack="acme", outputs={}, changes=ChangeSet(stack="acme", changes=[])),
                   fingerprint="h")
    with pytest.raises(type(failure)):
        activate(ws, record("acme"), TenantSpec(id="acme"), done)
    assert saved == [{"provision_failed": True}]
