"""`cell remove`'s rules that need no sandbox: the home cell is never retired, a
cell is not removed while others of its account and region use the
RDSOSMetrics log group it created, and the flag the removal writes leaves
every fingerprint recorded before it valid."""

import hashlib
import json

import pytest
from pydantic import ValidationError

from tenantctl.fingerprint import cell_hash, program_fingerprint
from tenantctl.models import CellSpec
from tenantctl.operations.cell_remove import _metrics_users
from tenantctl.stackconfig import write_cell
from tenantctl.workspace import Workspace

RUNTIME = "arn:aws:iam::123456789012:role/tenantctl-runtime"
OTHER = "arn:aws:iam::222222222222:role/tenantctl-cell"


def test_the_home_cell_cannot_be_written_retiring():
    with pytest.raises(ValidationError, match="never retired"):
        CellSpec(retiring=True)


def test_a_cell_whose_metrics_group_others_use_names_them(tmp_path):
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
    assert _metrics_users(ws, first, "123456789012") == ["eu2", "eu5"]
    assert _metrics_users(ws, first, "222222222222") == ["eu2", "eu4", "eu5"]  # the target's own account is it
    assert _metrics_users(ws, cells[1], "123456789012") == []  # it created none
    assert _metrics_users(ws, cells[2], "123456789012") == []


def test_retiring_false_leaves_the_fingerprints_recorded_before_it(tmp_path):
    spec = CellSpec(name="eu1", region="eu-west-1", runtime_principal_arn=RUNTIME)
    before = {k: v for k, v in spec.model_dump(mode="json").items() if k not in ("draining", "retiring")}
    recorded = hashlib.sha256(f"{json.dumps(before, sort_keys=True)}:{program_fingerprint(tmp_path)}".encode())
    assert cell_hash(spec, tmp_path) == recorded.hexdigest()
    assert cell_hash(spec.model_copy(update={"retiring": True}), tmp_path) != recorded.hexdigest()


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
