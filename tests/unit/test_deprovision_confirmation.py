"""What a deprovision's confirmation says it deletes and backs up (no sandbox)."""

from __future__ import annotations

import pytest
from runtime_fixtures import record, with_workspaces

from tenantctl.operations.deprovision import what_goes


@pytest.mark.parametrize("purge, final, backup", [
    (False, True, "a final backup is taken first (the workspace's own, under its key)"),
    (False, False, "NO final backup;"),
    (True, True, "NO final backup (--purge-data deletes the backups too);"),
])
def test_deprovisions_confirmation_says_whether_each_workspace_gets_its_final_backup(purge, final, backup):
    rec = with_workspaces(record("beta"), "ops")
    lines = what_goes(rec, purge_data=purge, final_backup=final)
    [ops] = [line for line in lines if line.startswith("workspace ops:")]
    assert f"schema tenant_beta__ws_ops: its data is deleted; {backup}" in ops, ops
    assert ops.endswith("objects under tenants/beta--ops/ " + ("purged" if purge else "kept"))
    assert ("a final backup is taken first" in lines[0]) is (final and not purge)


def test_a_purge_says_it_takes_the_prefixes_of_removed_workspaces_too():
    from tenantctl.operations.deprovision import purged_prefixes

    rec = with_workspaces(record("beta"), "ops")
    assert purged_prefixes(rec) == ["tenants/beta/", "tenants/beta--ops/", "tenants/beta--"]
    [objects] = [line for line in what_goes(rec, purge_data=True, final_backup=True) if "EVERY object" in line]
    assert "tenants/beta/ and under tenants/beta--*/ (its workspaces', removed ones included)" in objects
    assert not any("lifecycle rules" in line for line in what_goes(rec, purge_data=False, final_backup=True))
