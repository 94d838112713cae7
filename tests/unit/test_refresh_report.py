"""What `refresh` and `audit` report, without a sandbox: exit codes, the
markdown summaries, and how a tagged resource is read off its ARN and tags."""

from __future__ import annotations

import pytest

from tenantctl.engines.base import Op, PropertyDiff, ResourceChange, resource_arn
from tenantctl.engines.local.handlers.base import urn_tag
from tenantctl.errors import CHANGES_PENDING
from tenantctl.inventory import Tagged, unknown
from tenantctl.operations.audit import AuditReport, Finding
from tenantctl.operations.refresh import CellDrift, Orphan, RefreshSummary, TenantDrift, removal_failures
from tenantctl.templates import render

KEY_DRIFT = ResourceChange(op=Op.update, type="aws:kms/key:Key", name="acme-key",
                           diffs=[PropertyDiff(path="enableKeyRotation", old=True, new=False)])
GONE = ResourceChange(op=Op.delete, type="aws:sqs/queue:Queue", name="acme-dlq")
EXTRA = Orphan(arn="arn:aws:sqs:us-east-1:1:tenantctl-acme-extra", kind="sqs", name="tenantctl-acme-extra",
               removable=True)


def refresh_summary(*tenants: TenantDrift) -> RefreshSummary:
    return RefreshSummary(seconds=1.5, tenants=list(tenants))


def test_exit_codes_follow_apply_preview():
    clean = TenantDrift(tenant_id="beta", checked=13)
    drifted = TenantDrift(tenant_id="acme", checked=13, resources=[KEY_DRIFT])
    only_orphan = TenantDrift(tenant_id="gamma", orphans=[EXTRA])
    failed = TenantDrift(tenant_id="delta", ok=False, error="read failed")
    assert refresh_summary(clean).exit_code() == 0
    assert refresh_summary(clean, drifted).exit_code() == CHANGES_PENDING
    assert refresh_summary(only_orphan).exit_code() == CHANGES_PENDING
    assert refresh_summary(clean, drifted, failed).exit_code() == 1
    assert refresh_summary(clean, drifted, only_orphan).counts == {
        "cells": 0, "tenants": 3, "drifted": 2, "failed": 0, "skipped": 0, "resources": 1, "orphans": 1}


def test_a_skipped_tenant_is_counted_and_named_with_why_not_failed():
    away = TenantDrift(tenant_id="away", note="skipped: its cell 'nowhere' has no stack file in stacks/")
    summary = refresh_summary(TenantDrift(tenant_id="beta", checked=13), away)
    assert summary.exit_code() == 0 and summary.counts["skipped"] == 1 and summary.counts["failed"] == 0
    text = render("refresh_summary.md.j2", summary=summary)
    assert "**no drift** · 1 skipped" in text
    # Left unread, it is not said to have no drift: its row says it was not read.
    assert "| `away` | not read | skipped: its cell 'nowhere' has no stack file in stacks/ |" in text
    assert away.headline() == "not read"


def test_a_drifted_cell_counts_and_leads_the_markdown():
    cell = CellDrift(cell="eu1", checked=54, resources=[KEY_DRIFT])
    summary = RefreshSummary(seconds=1.5, cells=[cell], tenants=[TenantDrift(tenant_id="beta", checked=13)])
    assert summary.exit_code() == CHANGES_PENDING and summary.counts["drifted"] == 1 and summary.counts["cells"] == 1
    text = render("refresh_summary.md.j2", summary=summary)
    assert "### tenantctl refresh · 1 cell(s), 1 tenant(s)" in text and ":warning: **1 stack(s) drifted**" in text
    assert "| `cell eu1` | 1 changed |  |" in text and "`beta`" not in text
    failed = RefreshSummary(seconds=1, cells=[CellDrift(cell="eu1", ok=False, error="read failed")], tenants=[])
    assert failed.exit_code() == 1


def test_markdown_names_each_drifted_property_and_orphan():
    drifted = TenantDrift(tenant_id="acme", checked=13, resources=[KEY_DRIFT, GONE], orphans=[EXTRA])
    text = render("refresh_summary.md.j2", summary=refresh_summary(drifted, TenantDrift(tenant_id="beta")))
    assert ":warning: **1 tenant(s) drifted**: 2 resource(s), 1 orphan resource(s)" in text
    assert "| `acme` | 1 changed, 1 deleted out of band, 1 orphan(s) |  |" in text
    assert "| update | `acme-key` | `aws:kms/key:Key` | `enableKeyRotation`: `true` → `false` |" in text
    assert "| delete | `acme-dlq` | `aws:sqs/queue:Queue` |  |" in text
    assert "- orphan resource `sqs` `tenantctl-acme-extra`" in text and "`beta`" not in text
    clean = render("refresh_summary.md.j2", summary=refresh_summary(TenantDrift(tenant_id="beta")))
    assert ":white_check_mark: **no drift**" in clean and "|" not in clean


def test_a_pending_repair_is_drift_in_the_markdown_too():
    why = "last repair failed at 2026-12-07 03:17Z: boom; its resources may differ ..."
    pending = TenantDrift(tenant_id="acme", checked=13, pending=why)
    summary = refresh_summary(pending, TenantDrift(tenant_id="beta", checked=13))
    assert summary.exit_code() == CHANGES_PENDING and summary.counts["drifted"] == 1
    text = render("refresh_summary.md.j2", summary=summary)
    assert "| `acme` | repair pending |  |" in text and f"Repair pending: {why}" in text


def test_audit_markdown_and_exit_code():
    found = Finding(kind="unclaimed", tenant_id="ghost", subject="arn:aws:sqs:us-east-1:1:tenantctl-ghost-jobs",
                    detail="sqs tenantctl-ghost-jobs: tagged for tenant 'ghost', which no registry record names")
    report = AuditReport(seconds=0.5, records=3, stack_files=2, tagged=40, findings=[found])
    text = render("audit_report.md.j2", report=report)
    assert report.exit_code() == CHANGES_PENDING and report.counts["unclaimed"] == 1
    assert "| unclaimed | `ghost` | `arn:aws:sqs:us-east-1:1:tenantctl-ghost-jobs` |" in text
    empty = AuditReport(seconds=0.5, records=3, stack_files=2, tagged=40)
    assert empty.exit_code() == 0 and "nothing found" in render("audit_report.md.j2", report=empty)


@pytest.mark.parametrize("arn, kind, name, removable", [
    ("arn:aws:sqs:us-east-1:1:tenantctl-a-jobs", "sqs", "tenantctl-a-jobs", True),
    ("arn:aws:kms:us-east-1:1:key/abc", "kms:key", "abc", True),
    ("arn:aws:iam::1:role/tenantctl-a-app", "iam:role", "tenantctl-a-app", True),
    ("arn:aws:cloudwatch:us-east-1:1:alarm:tenantctl-a-dlq-depth", "cloudwatch:alarm", "tenantctl-a-dlq-depth", True),
    ("arn:aws:secretsmanager:us-east-1:1:secret:tenantctl/a/db-AbC1", "secretsmanager:secret", "tenantctl/a/db-AbC1",
     True),
    ("arn:aws:rds:us-east-1:1:db:tenantctl-a", "rds:db", "tenantctl-a", False),
    ("arn:aws:s3:::tenantctl-shared-1-us-east-1", "s3", "tenantctl-shared-1-us-east-1", False),
])
def test_a_tagged_resource_is_read_off_its_arn(arn, kind, name, removable):
    tagged = Tagged(arn=arn, region="us-east-1", tags={"tenant": "a", "managed-by": "tenantctl"})
    assert (tagged.kind, tagged.name, tagged.removable, tagged.tenant) == (kind, name, removable, "a")


def test_the_tenant_comes_from_the_urn_tag_when_the_tenant_tag_is_gone_and_known_urns_match():
    urn = "urn:pulumi:acme::tenantctl::tenantctl:kms:TenantKey$aws:kms/key:Key::acme-key"
    long_urn = "urn:pulumi:acme::tenantctl::" + "x" * 300
    key = Tagged(arn="arn:aws:kms:us-east-1:1:key/k", region="us-east-1", tags={"tenantctl:urn": urn})
    hashed = Tagged(arn="arn:aws:kms:us-east-1:1:key/h", region="us-east-1",
                    tags={"tenant": "acme", "tenantctl:urn": urn_tag(long_urn)})
    stray = Tagged(arn="arn:aws:sqs:us-east-1:1:extra", region="us-east-1", tags={"tenant": "acme"})
    assert key.tenant == "acme"
    assert unknown([key, hashed, stray], arns=set(), urns={urn, long_urn}) == [stray]
    assert unknown([key, hashed, stray], arns={stray.arn}, urns=set()) == [key, hashed]


def test_what_a_known_cloudformation_stack_made_is_not_unknown():
    stack = "arn:aws:cloudformation:us-east-1:1:stack/serverlessrepo-tenantctl-a-rot/0f1e"
    tags = {"tenant": "a", "managed-by": "tenantctl"}
    function = Tagged(arn="arn:aws:lambda:us-east-1:1:function:tenantctl-a-rot", region="us-east-1",
                      tags={**tags, "aws:cloudformation:stack-id": stack})
    queue = Tagged(arn="arn:aws:sqs:us-east-1:1:tenantctl-a-extra", region="us-east-1", tags=tags)
    assert (function.owner_arn, queue.owner_arn) == (stack, None)
    assert unknown([function, queue], arns={stack}, urns=set()) == [queue]
    # Only a stack the state knows: another stack's leftovers are still unknown.
    assert unknown([function, queue], arns=set(), urns=set()) == [function, queue]


@pytest.mark.parametrize("arn, retained", [
    ("arn:aws:rds:us-east-1:1:snapshot:rds:tenantctl-a-2026-12-05-14-50", True),  # RDS's own
    ("arn:aws:rds:us-east-1:1:snapshot:tenantctl-a-drill-20261205145331614-f5185d", True),
    ("arn:aws:rds:us-east-1:1:snapshot:tenantctl-a-final-20261205145011", True),
    ("arn:aws:rds:us-east-1:1:db:tenantctl-a", False),
])
def test_snapshots_are_backups_kept_on_purpose(arn, retained):
    assert Tagged(arn=arn, region="us-east-1", tags={"tenant": "a"}).retained is retained


STACK_ARN = "arn:aws:cloudformation:us-east-1:1:stack/s/0f1e"


@pytest.mark.parametrize("outputs, resource_id, arn", [
    ({"arn": "arn:aws:sqs:us-east-1:1:q"}, "https://sqs.us-east-1.amazonaws.com/1/q", "arn:aws:sqs:us-east-1:1:q"),
    ({"outputs": {}}, STACK_ARN, STACK_ARN),
    ({}, "role:policy", ""),
    (None, None, ""),
])
def test_a_resource_without_an_arn_output_is_known_by_an_id_that_is_one(outputs, resource_id, arn):
    assert resource_arn(outputs, resource_id) == arn


def test_a_fleet_refresh_scans_each_account_once_whatever_role_its_cells_name(monkeypatch):
    from types import SimpleNamespace

    from tenantctl import inventory
    from tenantctl.models import CellSpec
    from tenantctl.operations.refresh import _tagged_by_account
    from tenantctl.workspace import Workspace

    eua = CellSpec(name="eua", region="eu-west-1", account_role_arn="arn:aws:iam::222222222222:role/tenantctl-cell")
    euc = CellSpec(name="euc", region="eu-central-1", account_role_arn="arn:aws:iam::222222222222:role/ops")
    roles = Workspace.account_roles([eua, euc, CellSpec()])
    assert roles == {"222222222222": eua.account_role_arn, None: None}  # one role per account: its first cell's

    scans = []
    monkeypatch.setattr(inventory, "scan", lambda clients, regions, claimed=(): scans.append((clients, sorted(regions)))
                        or [])
    ws = SimpleNamespace(client=SimpleNamespace(in_account=lambda role: role))  # the clients: the role reached
    records = [SimpleNamespace(tenant_id=t, region=r, resources=None)
               for t, r in (("a", "eu-west-1"), ("c", "eu-central-1"), ("h", "us-east-1"))]
    tagged = _tagged_by_account(ws, records, {"a": "222222222222", "c": "222222222222", "h": None}, roles)
    assert sorted(scans, key=str) == sorted([(eua.account_role_arn, ["eu-central-1", "eu-west-1"]),
                                             (None, ["us-east-1"])], key=str)
    assert set(tagged) == {"222222222222", None}


# -- whose a tagged resource is: the tenant tag alone never decides ---------------------------

def urn_of(stack: str, name: str, typ: str = "aws:kms/key:Key") -> str:
    return f"urn:pulumi:{stack}::tenantctl::tenantctl:x:X${typ}::{name}"


KEY_ARN = "arn:aws:kms:us-east-1:1:key/6a1f"


@pytest.mark.parametrize("arn, urn, conflict", [
    # another tenant's, retagged `tenant=globex` by hand
    ("arn:aws:sqs:us-east-1:1:tenantctl-hooli-jobs-dlq", None, "its name belongs to tenant hooli"),
    (KEY_ARN, urn_of("hooli", "hooli-key"), "its tenantctl:urn tag names stack hooli"),
    ("arn:aws:ec2:us-east-1:1:vpc/vpc-0abc", urn_of("hooli", "hooli-vpc", "aws:ec2/vpc:Vpc"),
     "its tenantctl:urn tag names stack hooli"),
    (KEY_ARN, urn_of("hooli.k2", "hooli-key"), "its tenantctl:urn tag names stack hooli.k2"),
    (KEY_ARN, urn_of("platform", "platform-key"), "its tenantctl:urn tag names stack platform"),
    ("arn:aws:secretsmanager:us-east-1:1:secret:tenantctl/hooli/db-AbC1", None, "its name belongs to tenant hooli"),
    ("arn:aws:iam::1:role/tenantctl-hooli.k1-app", None, "its name belongs to tenant hooli"),
    ("arn:aws:sqs:us-east-1:1:tenantctl-globex-corp-jobs", None, "its name belongs to tenant globex-corp"),
    # globex's own, or nothing says otherwise: a genuine orphan
    ("arn:aws:sqs:us-east-1:1:tenantctl-globex-extra", None, None),
    ("arn:aws:sqs:us-east-1:1:tenantctl-globex--legal-jobs", None, None),
    ("arn:aws:iam::1:role/tenantctl-globex.k1-app", None, None),
    (KEY_ARN, urn_of("globex", "globex-extra-key"), None),
    (KEY_ARN, urn_of("globex.k1", "globex-key"), None),
    (KEY_ARN, urn_tag("urn:pulumi:hooli::" + "x" * 300), None),  # hashed: unreadable
    (KEY_ARN, None, None),
])
def test_a_resource_another_tenants_name_or_urn_claims_is_foreign_whatever_its_tenant_tag(arn, urn, conflict):
    tags = {"managed-by": "tenantctl", "tenant": "globex", **({"tenantctl:urn": urn} if urn else {})}
    tagged = Tagged(arn=arn, region="us-east-1", tags=tags)
    assert tagged.tenant == "globex" and tagged.foreign("globex") == conflict
    orphan = Orphan.of(tagged, "globex")
    assert orphan.conflict == conflict
    assert orphan.removable is (tagged.removable and conflict is None)
    if conflict:
        assert orphan.noun == "mis-tagged resource"
        assert orphan.fate(preview=True) == f"not this tenant's ({conflict}): left for a person, never removed"


def test_a_mis_tagged_resource_is_counted_and_written_apart_from_orphans():
    mistagged = Orphan(arn="arn:aws:sqs:us-east-1:1:tenantctl-hooli-jobs-dlq", kind="sqs",
                       name="tenantctl-hooli-jobs-dlq", removable=False, conflict="its name belongs to tenant hooli")
    drift = TenantDrift(tenant_id="globex", orphans=[EXTRA, mistagged])
    assert drift.headline() == "1 orphan(s), 1 mis-tagged" and drift.drifted
    text = render("refresh_summary.md.j2", summary=refresh_summary(drift))
    assert ("- **mis-tagged** `sqs` `tenantctl-hooli-jobs-dlq`: not this tenant's (its name belongs to tenant "
            "hooli): left for a person, never removed") in text
    assert "- orphan resource `sqs` `tenantctl-acme-extra`: would be removed" in text


def test_an_orphan_key_is_scheduled_for_deletion_by_its_id():
    from types import SimpleNamespace

    from tenantctl import inventory

    calls = []
    kms = SimpleNamespace(schedule_key_deletion=lambda **kw: calls.append(kw))
    key = Tagged(arn="arn:aws:kms:us-east-1:1:key/6a1f-77", region="us-east-1", tags={"tenant": "a"})
    assert inventory.remove(lambda service, region=None: kms, key) == "scheduled for deletion in 30 days"
    assert calls == [{"KeyId": "6a1f-77", "PendingWindowInDays": 30}]


def _repair(monkeypatch, tagged: list[Tagged], approve=None, fail: set[str] = frozenset()):
    """``remove_orphans`` of tenant globex over ``tagged``, its removals recorded (those of ``fail`` raise)."""
    from types import SimpleNamespace

    from botocore.exceptions import ClientError

    from tenantctl import inventory
    from tenantctl.engines.base import ChangeSet
    from tenantctl.models import TenantRecord, TenantStatus, Tier
    from tenantctl.operations.refresh import remove_orphans

    removed = []

    def remove(clients, resource):
        if resource.name in fail:
            raise ClientError({"Error": {"Code": "DeleteConflict", "Message": "in use."}}, "DeleteRole")
        removed.append(resource.name)
        return "deleted"

    monkeypatch.setattr(inventory, "is_live", lambda clients, resource: True)
    monkeypatch.setattr(inventory, "remove", remove)
    ws = SimpleNamespace(approve=approve, clients_for=lambda record: None)
    record = TenantRecord(tenant_id="globex", tier=Tier.pooled, status=TenantStatus.active, region="us-east-1")
    return remove_orphans(ws, record, ChangeSet(stack="globex"), tagged), removed


GLOBEX = {"managed-by": "tenantctl", "tenant": "globex"}
HOOLI_DLQ = Tagged(arn="arn:aws:sqs:us-east-1:1:tenantctl-hooli-jobs-dlq", region="us-east-1", tags=GLOBEX)
HOOLI_KEY = Tagged(arn=KEY_ARN, region="us-east-1",
                   tags={**GLOBEX, "tenantctl:urn": urn_of("hooli", "hooli-key")})
GLOBEX_EXTRA = Tagged(arn="arn:aws:sqs:us-east-1:1:tenantctl-globex-extra", region="us-east-1", tags=GLOBEX)
GLOBEX_ROLE = Tagged(arn="arn:aws:iam::1:role/tenantctl-globex-spare", region="global", tags=GLOBEX)


def test_a_repair_removes_its_own_orphans_and_never_another_tenants(monkeypatch):
    asked = []
    done, removed = _repair(monkeypatch, [HOOLI_DLQ, HOOLI_KEY, GLOBEX_EXTRA], approve=asked.append)
    assert removed == ["tenantctl-globex-extra"]
    assert [c.name for c in asked[0].changes] == ["tenantctl-globex-extra"]  # not even asked about hooli's
    assert [(o.name, o.removed, o.conflict is not None) for o in done] == [
        ("tenantctl-hooli-jobs-dlq", None, True), ("6a1f", None, True), ("tenantctl-globex-extra", "deleted", False)]
    assert removal_failures(done) is None


def test_a_removal_that_fails_is_an_error_and_one_not_confirmed_is_kept_said_once(monkeypatch):
    from tenantctl.errors import NotConfirmed

    done, removed = _repair(monkeypatch, [GLOBEX_EXTRA, GLOBEX_ROLE], fail={"tenantctl-globex-spare"})
    assert removed == ["tenantctl-globex-extra"]
    failed = {o.name: o for o in done}["tenantctl-globex-spare"]
    assert failed.removed is None and "DeleteConflict" in failed.error and failed.kept is None
    assert failed.fate(preview=False).startswith("removal failed: An error occurred (DeleteConflict)")
    assert removal_failures(done) == ("1 orphan resource(s) could not be removed: iam:role tenantctl-globex-spare "
                                      "(An error occurred (DeleteConflict) when calling the DeleteRole operation: "
                                      "in use)")
    text = render("refresh_summary.md.j2", summary=refresh_summary(TenantDrift(tenant_id="globex", orphans=done)))
    assert "- orphan resource `iam:role` `tenantctl-globex-spare`: removal failed: An error" in text

    def refuse(changes):
        raise NotConfirmed(f"stack {changes.stack}: the plan deletes or replaces 2 resource(s): pass --yes to confirm")

    done, removed = _repair(monkeypatch, [GLOBEX_EXTRA, GLOBEX_ROLE], approve=refuse)
    assert removed == [] and removal_failures(done) is None  # left on purpose: no failure
    assert {o.fate(preview=False) for o in done} == {
        "not removed: stack globex: the plan deletes or replaces 2 resource(s): pass --yes to confirm"}


def test_only_rules_added_to_a_group_whose_rules_are_resources_are_unmanaged():
    """The database's group (a declared rule resource is in it): the extra rule; the client group (inline
    rules, none of the stack's rule resources in it): nothing, whatever it holds; egress never."""
    from tenantctl.inventory import INGRESS_RULE, SECURITY_GROUP, unmanaged_rules

    live = [{"SecurityGroupRuleId": "sgr-declared", "GroupId": "sg-db", "IsEgress": False, "IpProtocol": "tcp",
             "FromPort": 5432, "ToPort": 5432, "ReferencedGroupInfo": {"GroupId": "sg-app"}},
            {"SecurityGroupRuleId": "sgr-open", "GroupId": "sg-db", "IsEgress": False, "IpProtocol": "tcp",
             "FromPort": 5432, "ToPort": 5432, "CidrIpv4": "0.0.0.0/0", "GroupOwnerId": "1"},
            {"SecurityGroupRuleId": "sgr-out", "GroupId": "sg-db", "IsEgress": True, "IpProtocol": "-1",
             "CidrIpv4": "0.0.0.0/0"},
            {"SecurityGroupRuleId": "sgr-inline", "GroupId": "sg-app", "IsEgress": False, "IpProtocol": "-1",
             "CidrIpv4": "10.0.0.0/16"}]
    asked = []

    class Paginator:
        def paginate(self, Filters):
            asked.append(Filters)
            return [{"SecurityGroupRules": live}]

    def clients(service, region=None):
        assert (service, region) == ("ec2", "eu-west-1")
        return type("Ec2", (), {"get_paginator": lambda self, name: Paginator()})()

    arn = "arn:aws:ec2:eu-west-1:1:"
    stack = [(SECURITY_GROUP, f"{arn}security-group/sg-db"), (SECURITY_GROUP, f"{arn}security-group/sg-app"),
             (INGRESS_RULE, f"{arn}security-group-rule/sgr-declared")]
    [rule] = unmanaged_rules(clients, "eu-west-1", iter(stack))
    assert (rule.kind, rule.name, rule.removable) == (
        "ec2:security-group-rule", "sgr-open (tcp 5432 from 0.0.0.0/0 into sg-db)", True)
    assert asked == [[{"Name": "group-id", "Values": ["sg-app", "sg-db"]}]]
    assert unmanaged_rules(clients, "eu-west-1", stack[:2]) == [] and len(asked) == 1  # no rule resource: no call


def test_a_missing_declared_subscription_is_drift_written_as_a_create():
    from tenantctl.inventory import DeclaredSubscription
    from tenantctl.operations.refresh import missing_subscription

    topic, queue = "arn:aws:sns:us-east-1:1:tenantctl-acme-alarms", "arn:aws:sqs:us-east-1:2:ops"
    missing = missing_subscription(DeclaredSubscription(arn=topic, region="us-east-1", tags={}, protocol="sqs",
                                                        endpoint=queue, resource="acme-to-0123456789"))
    drifted = TenantDrift(tenant_id="acme", checked=13, resources=[missing])
    summary = refresh_summary(drifted)
    assert summary.exit_code() == CHANGES_PENDING and drifted.headline() == "1 missing"
    text = render("refresh_summary.md.j2", summary=summary)
    assert ("| create | `acme-to-0123456789` | `aws:sns/topicSubscription:TopicSubscription` | "
            f"`subscription`: `sqs {queue}` → *(none)* |") in text
    assert "deleted or missing resources created" in text


def test_a_stacks_subscriptions_are_judged_against_the_cell_its_file_names(tmp_path):
    """``Workspace.stack_cell``: the cell whose platform stack the tenant's stack file names (mid-move the
    move's target once its target spec is written), the record's for its current stack when the
    file is gone (not the default cell's), nobody's for a move's other stack without one."""
    from tenant_runtime.models import TenantMove, Tier
    from tenantctl.models import CellSpec, TenantRecord, TenantSpec, TenantStatus
    from tenantctl.stackconfig import write_cell, write_tenant
    from tenantctl.workspace import Workspace

    stacks = tmp_path / "stacks"
    stacks.mkdir()
    write_cell(stacks, CellSpec())
    write_cell(stacks, CellSpec(name="eu1", region="eu-west-1", alarm_subscriptions=[
        {"protocol": "sqs", "endpoint": "arn:aws:sqs:eu-west-1:123456789012:ops"}]))
    ws = Workspace(project_dir=tmp_path, cwd=tmp_path)
    record = TenantRecord(tenant_id="acme", tier=Tier.pooled, status=TenantStatus.active, region="eu-west-1",
                          cell="eu1")
    assert ws.stack_cell(record, "acme").name == "eu1"  # no file: the record's cell
    write_tenant(stacks, TenantSpec(id="acme", region="eu-west-1", cell="eu1"))
    assert ws.stack_cell(record, "acme").name == "eu1"
    # Its move's target spec written (the record names the old cell until the switch).
    write_tenant(stacks, TenantSpec(id="acme", region="eu-west-1", cell="default"))
    assert ws.stack_cell(record, "acme").name == "default"
    moving = record.model_copy(update={"move": TenantMove(
        from_tier=Tier.pooled, to_tier=Tier.pooled, from_cell="eu1", to_cell="default", to_stack="acme.k1",
        from_stack="acme", old_store=_store())})
    assert ws.stack_cell(moving, "acme.k1") is None  # the other stack's file not written yet
    write_tenant(stacks, TenantSpec(id="acme", region="eu-west-1", cell="eu1"), stack="acme.k1")
    assert ws.stack_cell(moving, "acme.k1").name == "eu1"


def _store():
    from tenant_runtime.models import StoreConnection

    return StoreConnection(endpoint="db", port=5432, database="platform", schema_name="t_acme", role="t_acme",
                           secret_arn="arn:s")
