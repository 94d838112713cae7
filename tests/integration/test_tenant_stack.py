"""A tenant whose record names a stack other than its id (`<id>.k1`, as a move
to another account or region leaves it): every per-tenant operation runs on
that stack and its file, and never creates `Pulumi.<id>.yaml` or a stack `<id>`."""

from __future__ import annotations

import pytest

from tenantctl.drills import store
from tenantctl.drills.backup import backup
from tenantctl.drills.context import context_from_workspace
from tenantctl.drills.models import Target
from tenantctl.models import TenantSpec, TenantStatus
from tenantctl.operations.apply import Action, apply
from tenantctl.operations.deprovision import deprovision
from tenantctl.operations.provision import activate, apply_spec, merge_options, preview, provision
from tenantctl.operations.revive import revive
from tenantctl.operations.suspend import resume, set_suspended
from tenantctl.operations.workspaces import add
from tenantctl.placement import place
from tenantctl.stackconfig import read_tenant, stack_file, write_tenant

pytestmark = pytest.mark.integration

TENANT = "kg-acme"
STACK = f"{TENANT}.k1"
ENGINE_CALLS = ("up", "preview", "destroy", "preview_destroy", "refresh", "outputs")


@pytest.fixture(scope="module")
def stacks(workspace):
    """Every tenant stack the engine is asked about while the module runs."""
    seen: list[str] = []
    engine = workspace.engine
    with pytest.MonkeyPatch.context() as mp:
        for name in ENGINE_CALLS:
            real = getattr(engine, name)

            def spy(stack, *args, _real=real, **kwargs):
                if not stack.startswith(("platform", "cell-")):
                    seen.append(stack)
                return _real(stack, *args, **kwargs)

            mp.setattr(engine, name, spy)
        yield seen


@pytest.fixture(scope="module")
def moved(workspace, stacks):
    """The tenant as a finished move leaves it: its record names `<id>.k1`, whose
    file holds its spec, and nothing of generation 0 exists."""
    ws = workspace
    ws.ensure_platform()
    spec, placed = place(ws, TenantSpec(id=TENANT), None)  # its record, with the slot deprovision gives back
    with ws.registry.hold(TENANT, "provision", spec=spec, acquired=placed.record) as held:
        held.record = ws.registry.save(held.record, stack=STACK)
        applied = apply_spec(ws, spec, stack=STACK)
        held.record = activate(ws, held.record, spec, applied)
    return held.record


def _only_generation_one(ws, stacks: list[str]) -> None:
    assert set(stacks) == {STACK}
    assert not stack_file(ws.stacks_dir, TENANT).exists()
    assert not (ws.engine.state_root / f"{TENANT}.json").exists()


def test_provision_and_its_preview_run_on_the_recorded_stack(workspace, moved, stacks):
    spec = merge_options(workspace, TENANT, {"owner": "team-k1"})  # over the k1 file's spec
    assert spec.model_copy(update={"owner": moved.owner}) == read_tenant(stack_file(workspace.stacks_dir, STACK))
    planned = preview(workspace, spec)
    assert planned.existing and planned.changes.stack == STACK
    assert read_tenant(stack_file(workspace.stacks_dir, STACK)).owner != "team-k1"  # the preview put it back
    record, _ = provision(workspace, spec)
    assert record.owner == "team-k1" and record.stack == STACK
    assert read_tenant(stack_file(workspace.stacks_dir, STACK)).owner == "team-k1"
    _only_generation_one(workspace, stacks)


def test_a_cli_provision_reads_the_record_once(workspace, moved, monkeypatch):
    """`tenantctl provision ID`: the record read to find the stack file is the
    one the reservation is conditional on, not read a second time."""
    from typer.testing import CliRunner

    from tenant_runtime.registry import item_key
    from tenantctl.cli.app import app
    from tenantctl.registry import RegistryWriter

    reads: list[dict] = []
    real = RegistryWriter._call

    def counted(self, operation, **kwargs):
        if operation == "get_item" and kwargs["Key"] == item_key(TENANT):
            reads.append(kwargs)
        return real(self, operation, **kwargs)

    monkeypatch.setattr(RegistryWriter, "_call", counted)
    monkeypatch.chdir(workspace.project_dir)
    done = CliRunner().invoke(app, ["provision", TENANT, "--owner", "team-cli", "--json"])
    assert done.exit_code == 0, done.output
    assert len(reads) == 1
    assert workspace.registry.require(TENANT).owner == "team-cli"
    assert read_tenant(stack_file(workspace.stacks_dir, STACK)).owner == "team-cli"  # the recorded stack's file
    assert not stack_file(workspace.stacks_dir, TENANT).exists()


def test_apply_reads_previews_and_applies_the_recorded_stack(workspace, moved, stacks):
    path = stack_file(workspace.stacks_dir, STACK)
    write_tenant(workspace.stacks_dir, read_tenant(path).model_copy(update={"owner": "team-applied"}), stack=STACK)
    ahead = apply(workspace, preview=True, match=[TENANT], parallel=1)
    [planned] = ahead.results
    assert (planned.action, planned.ok) == (Action.update, True), planned.error
    done = apply(workspace, match=[TENANT], parallel=1)
    assert [(r.action, r.ok) for r in done.results] == [(Action.update, True)], done.results[0].error
    assert workspace.registry.require(TENANT).owner == "team-applied"
    _only_generation_one(workspace, stacks)


def test_suspend_resume_and_a_workspace_run_on_the_recorded_stack(workspace, moved, stacks):
    record, _ = set_suspended(workspace, TENANT, True)
    assert record.status is TenantStatus.suspended and read_tenant(stack_file(workspace.stacks_dir, STACK)).suspended
    record, done = resume(workspace, TENANT)
    assert record.status is TenantStatus.active and done == ["suspension lifted"]
    changed = add(workspace, TENANT, "ops")
    assert "ops" in changed.record.workspaces
    assert [w.name for w in read_tenant(stack_file(workspace.stacks_dir, STACK)).workspaces] == ["ops"]
    _only_generation_one(workspace, stacks)


def test_backup_deprovision_and_revive_use_the_recorded_stack(workspace, moved, stacks):
    record = workspace.registry.require(TENANT)
    ctx = context_from_workspace(workspace, record)
    manifest = backup(ctx, record)
    assert manifest.spec is not None and manifest.spec["owner"] == "team-applied"  # the k1 file's spec
    tomb, changes, _ = deprovision(workspace, TENANT, final_backup=False)
    assert tomb.status is TenantStatus.deprovisioned and changes.stack == STACK
    assert not stack_file(workspace.stacks_dir, STACK).exists()
    assert not (workspace.engine.state_root / f"{STACK}.json").exists()
    # Back from the backup into the stack it was destroyed from.
    revive(workspace, ctx, tomb, store.backup_index(ctx.s3, tomb, manifest.backup_id), target=Target.in_place,
           yes=True)
    back = workspace.registry.require(TENANT)
    assert back.status is TenantStatus.active and back.current_stack == STACK
    assert read_tenant(stack_file(workspace.stacks_dir, STACK)).owner == "team-applied"
    deprovision(workspace, TENANT, final_backup=False)
    _only_generation_one(workspace, stacks)
