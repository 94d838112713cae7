"""A cell's connection-budget settings (``allow_overcommit``, ``platform_connections``)
deploy nothing: they leave the cell's fingerprint as it was (a change to them runs
no up), and its stack file names them only when they are not the default (a file
written now still reads with a tenantctl of before)."""

from tenantctl.fingerprint import cell_hash
from tenantctl.models import PLATFORM_CONNECTIONS_DEFAULT, CellSpec
from tenantctl.stackconfig import read_cell, stack_file, write_cell

RUNTIME = "arn:aws:iam::123456789012:role/tenantctl-runtime"


def test_budget_settings_leave_the_fingerprint_and_are_written_only_when_set(tmp_path):
    spec = CellSpec(name="eu1", region="eu-west-1", runtime_principal_arn=RUNTIME)
    assert (spec.allow_overcommit, spec.platform_connections) == (False, PLATFORM_CONNECTIONS_DEFAULT)
    changed = spec.model_copy(update={"allow_overcommit": True, "platform_connections": 80})
    assert cell_hash(changed, tmp_path) == cell_hash(spec, tmp_path)

    write_cell(tmp_path, spec)
    text = stack_file(tmp_path, spec.stack).read_text()
    assert "allow_overcommit" not in text and "platform_connections" not in text
    write_cell(tmp_path, changed)
    text = stack_file(tmp_path, spec.stack).read_text()
    assert "allow_overcommit: true" in text and "platform_connections: 80" in text
    assert read_cell(tmp_path, "eu1") == changed
