"""`cell remove`'s rules that need no sandbox: the home cell is never retired, the
RDSOSMetrics log group of a removed cell goes to another cell of its account
and region, and the flags the removal writes leave every fingerprint recorded
before them valid."""

import hashlib
import json

import pytest
from pydantic import ValidationError

from tenantctl.fingerprint import cell_hash, program_fingerprint
from tenantctl.models import CellSpec
from tenantctl.operations.os_metrics import heir
from tenantctl.stackconfig import write_cell
from tenantctl.workspace import Workspace

RUNTIME = "arn:aws:iam::123456789012:role/tenantctl-runtime"
OTHER = "arn:aws:iam::222222222222:role/tenantctl-cell"


def test_the_home_cell_cannot_be_written_retiring():
    with pytest.raises(ValidationError, match="never retired"):
        CellSpec(retiring=True)


def test_the_metrics_group_goes_to_a_cell_of_the_same_account_and_region(tmp_path, monkeypatch):
    stacks = tmp_path / "stacks"
    stacks.mkdir()
    first = CellSpec(name="eu1", region="eu-west-1", account_role_arn=OTHER, runtime_principal_arn=RUNTIME)
    cells = [first,
             first.model_copy(update={"name": "eu2", "os_metrics_group": False}),  # same account and region
             first.model_copy(update={"name": "eu3", "region": "eu-central-1"}),  # another region
             first.model_copy(update={"name": "eu4", "account_role_arn": None, "os_metrics_group": False}),
             first.model_copy(update={"name": "eu5", "os_metrics_group": False,  # the same account by another role
                                      "account_role_arn": "arn:aws:iam::222222222222:role/ops"})]
    for spec in cells:
        write_cell(stacks, spec)
    ws = Workspace(project_dir=tmp_path, cwd=tmp_path)
    applied = {"eu3", "eu4", "eu5"}
    monkeypatch.setattr(ws, "cell_outputs", lambda name: {"bucket": f"b-{name}"} if name in applied else {})

    def heir_of(spec: CellSpec, target: str) -> str | None:
        found = heir(ws, spec, target)
        return found.name if found is not None else None

    assert heir_of(first, "123456789012") == "eu5"  # an applied one first (eu2 never was)
    assert heir_of(first, "222222222222") == "eu4"  # the target's own account is it: eu4 too, first by name
    applied.clear()
    assert heir_of(first, "123456789012") == "eu2"  # none applied: the first by name
    assert heir_of(cells[2], "123456789012") is None  # alone in its region
    # A removal killed after handing it over hands it to the same cell again.
    write_cell(stacks, cells[4].model_copy(update={"os_metrics_group": True, "os_metrics_adopted": True}))
    assert heir_of(first, "123456789012") == "eu5"
    # A cell being removed itself (its file `retiring`) takes nothing over.
    write_cell(stacks, cells[4].model_copy(update={"retiring": True, "draining": True}))
    assert heir_of(first, "123456789012") == "eu2"


def test_retiring_false_leaves_the_fingerprints_recorded_before_it(tmp_path):
    spec = CellSpec(name="eu1", region="eu-west-1", runtime_principal_arn=RUNTIME)
    later = ("draining", "retiring", "os_metrics_adopted", "allow_overcommit", "platform_connections",
             "alarm_subscriptions")
    before = {k: v for k, v in spec.model_dump(mode="json").items() if k not in later}
    recorded = hashlib.sha256(f"{json.dumps(before, sort_keys=True)}:{program_fingerprint(tmp_path)}".encode())
    assert cell_hash(spec, tmp_path) == recorded.hexdigest()
    assert cell_hash(spec.model_copy(update={"retiring": True}), tmp_path) != recorded.hexdigest()
    assert cell_hash(spec.model_copy(update={"os_metrics_adopted": True}), tmp_path) != recorded.hexdigest()


def test_a_cell_file_names_retiring_only_while_a_removal_is_under_way(tmp_path):
    """A file written now reads with a tenantctl of before (its spec forbids unknown keys)."""
    from tenantctl.stackconfig import read_cell, stack_file

    spec = CellSpec(name="eu1", region="eu-west-1", runtime_principal_arn=RUNTIME)
    write_cell(tmp_path, spec)
    assert "retiring" not in stack_file(tmp_path, spec.stack).read_text()
    write_cell(tmp_path, spec.model_copy(update={"retiring": True}))
    assert "retiring: true" in stack_file(tmp_path, spec.stack).read_text()
    assert read_cell(tmp_path, "eu1").retiring is True
    write_cell(tmp_path, spec)
    assert "retiring" not in stack_file(tmp_path, spec.stack).read_text() and read_cell(tmp_path, "eu1") == spec
    assert "os_metrics_adopted" not in stack_file(tmp_path, spec.stack).read_text()
    write_cell(tmp_path, spec.model_copy(update={"os_metrics_adopted": True}))
    assert read_cell(tmp_path, "eu1").os_metrics_adopted is True


def test_a_retained_delete_needs_no_confirmation():
    """The RDSOSMetrics group leaving a removed cell's state deletes nothing: the
    engine's approve hook (no terminal, no --yes) lets that plan through."""
    from tenantctl.confirmation import Confirmation
    from tenantctl.engines.base import ChangeSet, Op, ResourceChange
    from tenantctl.errors import NotConfirmed

    group = ResourceChange(op=Op.delete, type="aws:cloudwatch/logGroup:LogGroup", name="platform-os-metrics",
                           retained=True)
    Confirmation()(ChangeSet(stack="cell-eu1", changes=[group]))
    with pytest.raises(NotConfirmed):
        Confirmation()(ChangeSet(stack="cell-eu1", changes=[group.model_copy(update={"retained": False})]))


@pytest.mark.parametrize("group_exists", [True, False])
def test_a_new_platform_file_imports_the_group_rds_made_already(tmp_path, monkeypatch, moto_account, group_exists):
    """The home cell is first in its account and region, so it manages the group;
    on an account that already runs RDS with enhanced monitoring the group is
    there, and creating it again fails the first `platform up`: the new stack
    file says to import it. An existing file is left as it is."""
    import boto3

    from tenantctl.operations.cell import platform_stack_file
    from tenantctl.stackconfig import read_cell

    monkeypatch.setenv("TENANTCTL_TARGET", "aws")
    if group_exists:
        boto3.client("logs", region_name="eu-west-1").create_log_group(logGroupName="RDSOSMetrics")
    boto3.client("logs", region_name="eu-west-1").create_log_group(logGroupName="RDSOSMetrics-other")  # not it
    ws = Workspace(project_dir=tmp_path, cwd=tmp_path)
    platform_stack_file(ws, "eu-west-1", None)
    spec = read_cell(ws.stacks_dir, "default")
    assert (spec.region, spec.os_metrics_group, spec.os_metrics_adopted) == ("eu-west-1", True, group_exists)
    platform_stack_file(ws, None, "platform-team")  # a later option changes the file, not the claim
    assert read_cell(ws.stacks_dir, "default").model_dump() == spec.model_copy(update={"owner": "platform-team"}
                                                                                ).model_dump()
