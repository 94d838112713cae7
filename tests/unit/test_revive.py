"""What a revive decides without a sandbox: which backup of a workspace goes
with the tenant's backup it restores, and how a backup made under an earlier
key of its owner is told apart from a foreign or tampered one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from botocore.exceptions import ClientError
from runtime_fixtures import record

from tenantctl.drills.backup import earlier_key
from tenantctl.drills.models import BackupIndex
from tenantctl.operations.revive import paired_backup

T0 = datetime(2026, 12, 5, 2, 0, tzinfo=UTC)
OLD_KEY = "arn:aws:kms:us-east-1:123456789012:key/old"


def index(minute: int, workspace: str | None = None, key_arn: str = OLD_KEY) -> BackupIndex:
    at = T0 + timedelta(minutes=minute)
    return BackupIndex(backup_id=f"b{minute}-{workspace or 'tenant'}", tenant_id="acme", kind="pg_dump-schema",
                       started_at=at, finished_at=at + timedelta(seconds=5), key_arn=key_arn, workspace=workspace)


def test_a_workspace_backup_goes_with_the_tenant_backup_it_was_taken_after():
    tenant = [index(0), index(60), index(120)]  # the last one: the deprovision's final backup
    ws = [index(1, "ops"), index(30, "ops"), index(61, "ops"), index(121, "ops")]
    assert paired_backup(tenant[2], tenant, ws) == ws[3]  # the final ones (the default: --backup latest)
    assert paired_backup(tenant[1], tenant, ws) == ws[2]
    assert paired_backup(tenant[0], tenant, ws) == ws[1]  # its newest before the tenant's next backup
    assert paired_backup(tenant[0], tenant, ws[2:]) is None  # none that early: the workspace comes back empty
    assert paired_backup(tenant[2], tenant, []) is None


class Kms:
    """describe_key and list_resource_tags of one key; ``None`` tags: the key cannot be read."""

    def __init__(self, tags: dict[str, str] | None, state: str = "PendingDeletion") -> None:
        self.tags, self.state = tags, state

    def list_resource_tags(self, KeyId: str) -> dict:  # noqa: N803 - boto3's parameter name
        if self.tags is None:
            raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "ListResourceTags")
        return {"Tags": [{"TagKey": k, "TagValue": v} for k, v in self.tags.items()]}

    def describe_key(self, KeyId: str) -> dict:  # noqa: N803
        return {"KeyMetadata": {"KeyState": self.state, "DeletionDate": datetime(2027, 1, 4, tzinfo=UTC)}}


def test_a_workspace_backup_under_its_earlier_key_says_which_and_how_it_is_restored():
    live = record("acme")  # its key is not OLD_KEY
    why = earlier_key(Kms({"tenant": "acme", "workspace": "ops"}), live, index(0, "ops"))
    assert f"made under an earlier key of workspace ops of acme, {OLD_KEY} (PendingDeletion, deleted on 2027-01-04)" \
        in why and live.resources.kms_key_arn in why
    assert "`tenantctl workspace remove acme ops --yes`" in why
    assert "`tenantctl drill restore acme --workspace ops --backup b0-ops --target in-place --yes`" in why
    tenant = earlier_key(Kms({"tenant": "acme"}), live, index(0))
    assert "an earlier key of tenant acme" in tenant and "`tenantctl drill history acme`" in tenant


@pytest.mark.parametrize("tags, workspace, key", [
    ({"tenant": "other", "workspace": "ops"}, "ops", OLD_KEY),  # another tenant's key
    ({"tenant": "acme", "workspace": "legal"}, "ops", OLD_KEY),  # another workspace's
    ({"tenant": "acme"}, "ops", OLD_KEY),  # the tenant's own, for a workspace backup
    (None, "ops", OLD_KEY),  # unreadable
    ({"tenant": "acme", "workspace": "ops"}, "ops", None),  # the current key: its data key was tampered with
])
def test_any_other_refusal_keeps_kms_words(tags, workspace, key):
    live = record("acme")
    assert earlier_key(Kms(tags), live, index(0, workspace, key or live.resources.kms_key_arn)) is None
