"""A drill of a workspace sees the workspace's schema, prefix and key, never the tenant's."""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws
from runtime_fixtures import record

from tenant_runtime.models import StoreConnection, Tier, WorkspaceResources
from tenantctl.drills.context import DrillContext
from tenantctl.drills.envelope import encryption_context
from tenantctl.drills.scope import scoped_context, workspace_view
from tenantctl.errors import NotFound
from tenantctl.naming import OwnerNames

WS_KEY = "arn:aws:kms:us-east-1:123456789012:key/legal"


def with_legal(tier: Tier = Tier.pooled):
    names = OwnerNames("acme", "legal")
    base = record("acme")
    legal = WorkspaceResources(
        name="legal", store=StoreConnection(endpoint="127.0.0.1", database="postgres", schema_name=names.schema,
                                            role=names.db_role, secret_arn="arn:secret:legal"),
        kms_key_arn=WS_KEY, kms_alias=names.kms_alias, prefix=names.s3_prefix, queue_url="https://sqs/legal",
        dlq_url="https://sqs/legal-dlq", role_arn="arn:aws:iam::123456789012:role/legal")
    resources = base.resources.model_copy(update={"tier": tier, "workspaces": {"legal": legal}})
    return base.model_copy(update={"tier": tier, "resources": resources})


@pytest.mark.parametrize("tier", [Tier.pooled, Tier.dedicated])
def test_a_workspace_view_has_its_schema_prefix_and_key_and_is_one_schema(tier):
    tenant = with_legal(tier)
    view = workspace_view(tenant, "legal")
    names = OwnerNames("acme", "legal")
    assert (view.tenant_id, view.tier, view.resources.tier) == ("acme", Tier.pooled, Tier.pooled)
    assert (view.resources.kms_key_arn, view.resources.prefix, view.resources.store.schema_name) == \
        (WS_KEY, names.s3_prefix, names.schema)
    assert view.resources.bucket == tenant.resources.bucket and view.resources.workspaces == {}
    assert workspace_view(tenant, None) is tenant


def test_a_removed_workspace_is_seen_from_its_names_with_no_key_and_one_never_had_is_unknown():
    tenant = record("acme")  # no workspace applied any more
    names = OwnerNames("acme", "legal")
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=tenant.resources.bucket)
        s3.put_object(Bucket=tenant.resources.bucket, Key=f"{names.s3_prefix}backups/b1/index.json", Body=b"{}")
        drills = DrillContext(s3=s3, kms=None, admin_user="a", admin_password="p")
        ctx, view = scoped_context(drills, tenant, "legal")  # its backups stay under its prefix
        with pytest.raises(NotFound, match="has no workspace 'never'"):
            scoped_context(drills, tenant, "never")  # no backups: a name it never had, not a removed workspace
    assert ctx.scope == "legal" and view.resources.kms_key_arn == ""
    assert (view.resources.prefix, view.resources.store.schema_name) == (names.s3_prefix, names.schema)
    with pytest.raises(NotFound):
        workspace_view(tenant, "legal")


def test_a_workspace_backup_is_sealed_in_its_own_encryption_context():
    assert encryption_context("acme", "b1") == {"tenant_id": "acme", "purpose": "backup", "backup_id": "b1"}
    assert encryption_context("acme", "b1", "legal") != encryption_context("acme", "b1")
    assert encryption_context("acme", "b1", "legal")["workspace"] == "legal"


def test_drill_all_covers_each_serving_tenant_and_each_of_its_workspaces():
    from tenantctl.drills.run import drill_targets
    from tenantctl.models import TenantStatus

    acme = with_legal()
    acme = acme.model_copy(update={"resources": acme.resources.model_copy(update={"workspaces": {
        "zeta": acme.workspaces["legal"].model_copy(update={"name": "zeta"}), **acme.workspaces}})})
    plain, gone = record("beta"), record("gamma").model_copy(update={"status": TenantStatus.deprovisioned})
    paused = record("delta").model_copy(update={"status": TenantStatus.suspended})
    targets, asleep = drill_targets([acme, plain, gone, paused])
    assert [(r.tenant_id, w) for r, w in targets] == [
        ("acme", None), ("acme", "legal"), ("acme", "zeta"), ("beta", None), ("delta", None)] and asleep == []


def test_drill_all_leaves_a_hibernated_tenant_asleep_only_while_its_instance_is_stopped():
    """Stopped: nothing written since it was, and waking it nightly would undo the hibernation. Woken
    by a request (its flag still set until `resume` or the next `hibernate`): it may hold new writes."""
    from tenantctl.drills.run import drill_targets
    from tenantctl.models import Hibernation, Tier

    def dedicated(tenant_id: str):
        made = record(tenant_id).model_copy(update={"tier": Tier.dedicated})
        return made.model_copy(update={"hibernation": Hibernation(db_instance=f"tenantctl-{tenant_id}",
                                                                  region=made.region)})

    stopped, woken, pooled = dedicated("sleepy"), dedicated("woken"), record("pooled")
    asked = []

    def asleep(r):
        asked.append(r.tenant_id)
        return r.tenant_id == "sleepy"

    targets, sleeping = drill_targets([stopped, woken, pooled], asleep)
    assert [r.tenant_id for r, _ in targets] == ["woken", "pooled"] and sleeping == [stopped]
    assert asked == ["sleepy", "woken"]  # only hibernated tenants' instances are read



def test_drill_all_goes_on_past_a_tenant_it_could_not_drill_but_not_past_a_compression_refusal():
    from datetime import UTC, datetime

    from tenantctl.drills.compression import CompressionUnsupported
    from tenantctl.drills.models import DrillReport, Verdict
    from tenantctl.drills.run import drill_each
    from tenantctl.errors import Conflict, InvalidInput, Locked

    at = datetime(2026, 12, 6, tzinfo=UTC)
    targets = [(record(t), None) for t in ("acme", "beta", "gamma", "delta", "eps")]
    why = {"beta": InvalidInput("tenant 'beta' is deprovisioned: nothing live to back up"),
           "gamma": Conflict("tenant 'gamma' is deprovisioning"),
           "eps": Locked("tenant 'eps' is locked by a running drill-restore")}

    def run_one(rec, scope):  # what the CLI's drill of one target raises or returns
        if rec.tenant_id in why:
            raise why[rec.tenant_id]
        return DrillReport(drill_id="d", tenant_id=rec.tenant_id, tier="pooled", kind="run", started_at=at,
                           finished_at=at, verdict=Verdict.passed)

    refused, skipped = [], []
    sweep = drill_each(targets, run_one, refused.append, lambda rec, reason: skipped.append(rec.tenant_id))
    assert [r.tenant_id for r in sweep.drills] == ["acme", "delta"] and sweep.exit_code() == 5
    assert refused == [why["beta"], why["gamma"]] and skipped == ["eps"]  # locked: skipped, not counted
    # In --json as in the other fleet commands' (`skipped`, `failed`), not on stderr only.
    shown = sweep.model_dump(mode="json")
    assert shown["skipped"] == [{"tenant_id": "eps", "workspace": None, "reason": str(why["eps"])}]
    assert [(f["tenant_id"], f["exit_code"]) for f in shown["failed"]] == [("beta", 3), ("gamma", 5)]
    why["beta"] = CompressionUnsupported("cannot back up with --compress zstd")  # every drill would refuse it
    with pytest.raises(CompressionUnsupported):
        drill_each(targets, run_one, refused.append, skipped.append)
