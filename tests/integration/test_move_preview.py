"""`tenantctl move ID ... --preview` through the real CLI on the session's
sandbox: it names the target cell, its account and region and the kind of
move, plans the target stack as `provision --preview` plans a tenant, and
refuses what the run refuses with the run's exit code and error object (the
run asked the same right after: the two share one code path), changing
nothing: the tenant's registry item, its cell's counter, every stack file and
the sandbox's resources of the tenant read the same before and after. A
revive into a draining cell names `cell drain NAME --undo`.

One pooled tenant of the default cell, shared by the tests of this module
(no move ever runs); a second one deprovisioned for the revive."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from fault_tools import inventory, registry_record, run_id, write_record
from move_tools import free_slots

from tenant_runtime.models import MovePhase, TenantMove
from tenantctl import naming
from tenantctl.models import TenantStatus
from tenantctl.operations.deprovision import deprovision
from tenantctl.registry import new_lock
from tenantctl.stackconfig import stack_file

pytestmark = pytest.mark.integration

TENANT = f"mp-{run_id()}"


@pytest.fixture(scope="module")
def tenant(provision_tenant, workspace) -> Iterator:
    record = provision_tenant(TENANT)
    yield record
    left = workspace.registry.get(TENANT)
    if left is not None and left.status is TenantStatus.active:
        deprovision(workspace, TENANT, final_backup=False)


def _state(sandbox, workspace, cell: str) -> tuple:
    """What a preview must leave as it found it."""
    stacks = {p.name: p.read_text() for p in sorted(workspace.stacks_dir.glob("*.yaml"))}
    return (registry_record(sandbox, TENANT), workspace.registry.counter_items([cell]), stacks,
            inventory(sandbox, TENANT))


def _preview(cli, *args: str):
    run = cli("move", TENANT, *args, "--preview", "--json")
    return run, json.loads(run.stdout) if run.stdout.strip() else None


def _refused_alike(cli, args: tuple[str, ...], code: int, rule: str | None = None) -> dict:
    """The preview's refusal, then the run's: the same exit code and error object."""
    preview, said = _preview(cli, *args)
    run = cli("move", TENANT, *args, "--json")
    assert preview.returncode == code, (preview.stdout, preview.stderr)
    assert run.returncode == code, (run.stdout, run.stderr)
    assert said["error"] == json.loads(run.stdout)["error"]
    assert said["error"]["rule"] == rule
    return said["error"]


def test_a_preview_names_the_target_and_plans_its_store_changing_nothing(tenant, workspace, sandbox,
                                                                          tenantctl_cli):
    before = _state(sandbox, workspace, tenant.cell)
    run, found = _preview(tenantctl_cli, "--tier", "dedicated")
    assert run.returncode == 12, run.stderr  # as provision --preview: changes pending
    account = workspace.cell_outputs(tenant.cell).get("account_id") or found["target"]["account_id"]
    assert found["outcome"] == "would_start" and found["kind"] == "same-account"
    assert found["source"] == {"tier": "pooled", "cell": tenant.cell, "account_id": account,
                               "region": tenant.region}
    assert found["target"] == {"tier": "dedicated", "cell": tenant.cell, "account_id": account,
                               "region": tenant.region}
    created = {c["type"] for c in found["changes"]["changes"] if c["op"] == "create"}
    assert "aws:rds/instance:Instance" in created, created  # the dedicated store, beside the current one
    assert found["phases"][0].startswith("preparing") and found["phases"][-1].startswith("switched")
    assert found["finalize_destroys"] == [f"the old pooled store (database {tenant.resources.store.database}, "
                                          f"schema {tenant.resources.store.schema_name})"]
    assert found["exit_code"] == 12
    text = tenantctl_cli("move", TENANT, "--tier", "dedicated", "--preview")
    assert text.returncode == 12, text.stderr
    assert f"-> dedicated in cell {tenant.cell}" in text.stdout and "--finalize destroys" in text.stdout
    assert "aws:rds/instance:Instance" in text.stdout
    assert _state(sandbox, workspace, tenant.cell) == before


def test_a_preview_refuses_what_the_run_refuses_with_its_exit_code(tenant, workspace, sandbox, tenantctl_cli):
    before = _state(sandbox, workspace, tenant.cell)
    original = registry_record(sandbox, TENANT)
    # Nothing to move: exit 0, as the run's `unchanged`.
    same, said = _preview(tenantctl_cli, "--tier", "pooled")
    assert same.returncode == 0 and said["outcome"] == "unchanged", same.stderr
    # Usage: no target, --rollback / --finalize (nothing open to preview either way).
    assert _preview(tenantctl_cli)[0].returncode == 2
    for option in ("--rollback", "--finalize"):
        refused = tenantctl_cli("move", TENANT, option, "--preview")
        assert refused.returncode == 2 and "`tenantctl status" in refused.stderr, refused.stderr
    assert _refused_alike(tenantctl_cli, ("--cell", "nowhere"), 3)["message"].startswith("--cell nowhere")
    # No replication slot for the copy on the server of the store it leaves.
    with free_slots(sandbox, 0, prefix="mp_fill"):
        _refused_alike(tenantctl_cli, ("--tier", "dedicated"), 3, "replication-slots")
    # The target cell draining: exit 11, naming what undrains it.
    workspace.registry.set_draining(tenant.cell, True)
    try:
        error = _refused_alike(tenantctl_cli, ("--tier", "dedicated"), 11)
        assert f"`tenantctl cell drain {tenant.cell} --undo`" in error["message"], error
    finally:
        workspace.registry.set_draining(tenant.cell, False)
    try:
        write_record(sandbox, original | {"status": "suspended"})
        _refused_alike(tenantctl_cli, ("--tier", "dedicated"), 3)
        # Locked by a live run (this test process).
        write_record(sandbox, original | {"lock": new_lock("provision").model_dump(mode="json")})
        error = _refused_alike(tenantctl_cli, ("--tier", "dedicated"), 5)
        assert "locked by a running provision" in error["message"], error
        # A move open already: to another target, exit 5; the same one, its remaining phases.
        store = tenant.resources.store
        opened = TenantMove(from_tier="pooled", to_tier="dedicated", from_cell=tenant.cell, to_cell=tenant.cell,
                            phase=MovePhase.copying, old_store=store, new_store=store,
                            phase_at=datetime.now(UTC), started_at=datetime.now(UTC))
        write_record(sandbox, original | {"move": opened.model_dump(mode="json")})
        _refused_alike(tenantctl_cli, ("--tier", "pooled"), 5)
        resumed, said = _preview(tenantctl_cli)
        assert resumed.returncode == 12 and said["outcome"] == "would_resume", resumed.stderr
        assert said["phase"] == "copying" and said["phases"][0].startswith("copying") and said["changes"] is None
        rolling = opened.model_copy(update={"phase": MovePhase.rolling_back})
        write_record(sandbox, original | {"move": rolling.model_dump(mode="json")})
        rolling_back = tenantctl_cli("move", TENANT, "--preview")
        assert rolling_back.returncode == 3 and "is rolling back" in rolling_back.stderr, rolling_back.stderr
    finally:
        write_record(sandbox, original)
    assert _state(sandbox, workspace, tenant.cell) == before


def test_a_revive_into_a_draining_cell_names_the_undrain(provision_tenant, workspace, tenantctl_cli):
    tomb = provision_tenant(f"mq-{run_id()}")
    deprovision(workspace, tomb.tenant_id)  # its final backup is what the revive restores
    workspace.registry.set_draining(tomb.cell, True)
    try:
        revive = tenantctl_cli("drill", "restore", tomb.tenant_id, "--target", "in-place", "--yes", "--json")
    finally:
        workspace.registry.set_draining(tomb.cell, False)
    assert revive.returncode == 11, (revive.stdout, revive.stderr)
    message = json.loads(revive.stdout)["error"]["message"]
    assert "cannot come back into its cell" in message
    assert f"`tenantctl cell drain {tomb.cell} --undo` takes new tenants there again" in message, message
    assert workspace.registry.require(tomb.tenant_id).status is TenantStatus.deprovisioned


def test_a_preview_to_a_cell_never_applied_applies_nothing(tenant, workspace, sandbox, tenantctl_cli):
    """A committed cell of another account the sandbox has not applied: the run
    would apply it first; the preview names it, the second stack the tenant
    would be built in and the old stack's resources its finalize destroys,
    and leaves the cell unapplied."""
    name = f"mpc{run_id()}"
    added = tenantctl_cli("cell", "add", name, "--region", tenant.region, "--account-role",
                          "arn:aws:iam::444444444444:role/tenantctl-cell", "--write-only")
    assert added.returncode == 0, added.stderr
    cell_file = stack_file(workspace.stacks_dir, naming.cell_stack(name))
    try:
        before = _state(sandbox, workspace, tenant.cell)
        run, found = _preview(tenantctl_cli, "--cell", name)
        assert run.returncode == 12, run.stderr
        assert found["cell_created_first"] and found["changes"] is None
        assert found["kind"] == "cross-account-region" and found["stack"] == naming.stack_name(TENANT, 1)
        assert found["target"] == {"tier": "pooled", "cell": name, "account_id": "444444444444",
                                   "region": tenant.region}
        assert found["phases"][0].startswith(f"cell {name} applied first")
        destroyed = {what.split(" ")[0] for what in found["finalize_destroys"]}  # the old stack's, by type
        assert {"aws:kms/key:Key", "aws:iam/role:Role", "aws:sqs/queue:Queue"} <= destroyed, destroyed
        assert _state(sandbox, workspace, tenant.cell) == before
        assert not workspace.cell_outputs(name)
    finally:
        cell_file.unlink(missing_ok=True)
