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


def _destroyed(*types: str):
    from tenantctl.engines.base import ChangeSet, Op, ResourceChange

    return ChangeSet(stack="beta", changes=[ResourceChange(op=Op.delete, type=t, name=f"r{i}", arn=f"arn:{i}")
                                            for i, t in enumerate(types)])


def test_a_never_provisioned_record_is_not_said_to_have_had_its_key_scheduled_for_deletion():
    """A record whose provision never finished (no resources recorded): what its deprovision did."""
    from tenantctl.operations.deprovision import deleted_keys, what_went

    empty = record("beta")
    nothing = _destroyed()
    said = what_went(empty, nothing, {"keys_scheduled_for_deletion": deleted_keys(nothing), "never_provisioned": True},
                     purge_data=False)
    assert "key scheduled for deletion" not in said and "nothing to remove" in said, said
    assert "never provisioned" in said and "no KMS key" in said, said
    # A provision that stopped part way left a key: that one is scheduled for deletion, and said so.
    left = _destroyed("aws:kms/key:Key", "aws:sqs/queue:Queue")
    assert deleted_keys(left) == ["arn:0"]
    said = what_went(empty, left, {"keys_scheduled_for_deletion": deleted_keys(left), "never_provisioned": True},
                     purge_data=False)
    assert "2 resource(s) its unfinished provision left removed" in said and "key scheduled for deletion" in said
    # A provisioned tenant reads as before.
    full = _destroyed("aws:kms/key:Key", "aws:kms/key:Key", "aws:sqs/queue:Queue")
    said = what_went(record("beta"), full, {"keys_scheduled_for_deletion": deleted_keys(full),
                                            "never_provisioned": False}, purge_data=False)
    assert said.startswith("3 resources removed; 2 keys scheduled for deletion") and "objects kept" in said, said
