"""Workspaces of a tenant: their names never collide with another tenant's or
workspace's (prefix twins included), their rules, and the spec and record codecs."""

from __future__ import annotations

import itertools

import pytest
from pydantic import ValidationError

from tenant_runtime.models import TenantRecord, TenantResources
from tenantctl import naming
from tenantctl.models import TenantSpec, describe_validation_error
from tenantctl.naming import OwnerNames

# Owners whose names must all differ: tenants that are prefix twins of each
# other and of workspace names, and workspaces that are prefix twins of each other.
OWNERS = [
    OwnerNames("acme"), OwnerNames("acme-legal"), OwnerNames("acme-legal-x"), OwnerNames("acme-ws"),
    OwnerNames("acme-ws-legal"), OwnerNames("legal"), OwnerNames("ws"),
    OwnerNames("acme", "legal"), OwnerNames("acme", "legal-x"), OwnerNames("acme", "x"),
    OwnerNames("acme", "ws"), OwnerNames("acme", "ws-legal"), OwnerNames("acme", "acme"),
    OwnerNames("acme-legal", "x"), OwnerNames("acme-legal", "legal"), OwnerNames("acme-ws", "legal"),
    OwnerNames("legal", "acme"), OwnerNames("a", "b-c"), OwnerNames("a-b", "c"),
]
KINDS = ["schema", "db_role", "kms_alias", "s3_prefix", "queue", "dlq", "iam_role", "secret"]
# Path-like names matched by prefix somewhere (S3 listing and resource
# patterns, alias and secret patterns in policies): one owner's path never lies
# under another's. A workspace's S3 prefix is beside its tenant's
# (`tenants/<id>--<ws>/`), so the tenant's role and listings never reach it;
# its alias and secret lie under its own tenant's path, which no policy matches by prefix.
PREFIX_MATCHED = ["kms_alias", "s3_prefix", "secret"]


@pytest.mark.parametrize("kind", KINDS)
def test_no_two_owners_share_a_name(kind):
    names = [getattr(o, kind) for o in OWNERS]
    assert len(set(names)) == len(names), kind


def test_a_names_of_one_kind_are_never_those_of_another_kind_of_another_owner():
    # e.g. the DB role of workspace `legal` must not be the schema of workspace `legal-app`
    # of another tenant: PostgreSQL keeps roles and schemas apart, but the scans read both.
    seen: dict[str, OwnerNames] = {}
    for owner in OWNERS:
        for kind in KINDS:
            name = getattr(owner, kind)
            other = seen.setdefault(name, owner)
            assert other == owner, (name, owner, other)


@pytest.mark.parametrize("kind", PREFIX_MATCHED)
def test_no_path_lies_under_another_owners(kind):
    def path(o: OwnerNames) -> str:
        name = getattr(o, kind)
        return name if name.endswith("/") else name + "/"

    for a, b in itertools.permutations(OWNERS, 2):
        if path(b).startswith(path(a)):
            # Only an alias or secret of a workspace under its own tenant's path.
            assert kind != "s3_prefix" and a.workspace is None and b.tenant_id == a.tenant_id, (kind, a, b)


def test_the_names_of_a_workspace():
    assert OwnerNames("acme", "legal").all() == {
        "schema": "tenant_acme__ws_legal", "db_role": "tenant_acme__ws_legal_app",
        "kms_alias": "alias/tenantctl/acme/ws/legal", "s3_prefix": "tenants/acme--legal/",
        "queue": "tenantctl-acme--legal-jobs", "dlq": "tenantctl-acme--legal-jobs-dlq",
        "iam_role": "tenantctl-acme--legal-app", "secret": "tenantctl/acme/ws/legal/db"}
    assert OwnerNames("acme").all()["schema"] == naming.schema_name("acme")  # a tenant's are as they were
    assert OwnerNames("acme", "legal").key == "acme/legal" and OwnerNames("acme").key == "acme"


@pytest.mark.parametrize("owner", OWNERS)
def test_tenant_ids_in_tells_a_workspaces_names_from_another_tenants(owner):
    for name in owner.all().values():
        assert naming.tenant_ids_in(name, owner.tenant_id) == set(), name
        for other in {o.tenant_id for o in OWNERS} - {owner.tenant_id}:
            assert naming.tenant_ids_in(name, other) == {owner.tenant_id}, (name, other)


def test_a_tenant_owns_its_workspaces_queues_secrets_and_aliases_only():
    legal = OwnerNames("acme", "legal")
    assert naming.owns_queue("acme", legal.queue) and naming.owns_queue("acme", legal.dlq)
    assert naming.owns_secret("acme", legal.secret + "-AbCdEf") and naming.owns_alias("acme", legal.kms_alias)
    twin = OwnerNames("acme-legal", "x")
    assert not naming.owns_queue("acme", twin.queue) and not naming.owns_secret("acme", twin.secret)
    assert not naming.owns_alias("acme", twin.kms_alias)
    assert not naming.owns_queue("acme-legal", legal.queue) and not naming.owns_secret("acme-legal", legal.secret)


@pytest.mark.parametrize("bad", ["Legal", "9x", "le_gal", "le--gal", "legal-", "", "le/gal", "le.gal"])
def test_bad_workspace_names_are_refused(bad):
    assert naming.workspace_problem("acme", bad)
    with pytest.raises(ValidationError) as exc:
        TenantSpec(id="acme", workspaces=[{"name": bad}])
    assert "workspace" in describe_validation_error(exc.value)


def test_the_longest_workspace_name_fits_every_derived_name():
    for tid in ("a", "acme", "a" * 30, "a" * naming.max_id_length()):
        n = naming.max_workspace_length(tid)
        if n == 0:
            assert naming.workspace_problem(tid, "a")
            continue
        names = OwnerNames(tid, "a" * n)
        assert len(names.db_role.encode()) <= 63 and len(names.iam_role) <= 64 and len(names.dlq) <= 80
        assert naming.workspace_problem(tid, "a" * n) is None
        assert "at most" in naming.workspace_problem(tid, "a" * (n + 1))
    assert naming.max_workspace_length("acme") == 43  # PostgreSQL's 63 bytes bind first


def test_a_spec_without_workspaces_is_written_and_hashed_as_before():
    spec = TenantSpec(id="acme")
    assert "workspaces" not in spec.desired()
    with_ws = TenantSpec(id="acme", workspaces=[{"name": "legal"}])
    assert with_ws.desired()["workspaces"] == [{"name": "legal", "queue": spec.queue.model_dump()}]
    assert with_ws.content_hash() != spec.content_hash()
    assert TenantSpec.model_validate(spec.desired()).content_hash() == spec.content_hash()
    assert TenantSpec.model_validate(with_ws.desired()) == with_ws


def test_a_workspace_appears_once():
    with pytest.raises(ValidationError) as exc:
        TenantSpec(id="acme", workspaces=[{"name": "legal"}, {"name": "legal"}])
    assert "appears twice" in describe_validation_error(exc.value)


def test_records_written_before_workspaces_decode_with_none():
    old = {"tenant_id": "acme", "tier": "pooled", "region": "us-east-1", "kms_key_arn": "k", "kms_alias": "a",
           "bucket": "b", "prefix": "tenants/acme/", "queue_url": "q", "dlq_url": "d", "role_arn": "r",
           "store": {"endpoint": "h", "database": "db", "schema_name": "tenant_acme", "role": "tenant_acme_app",
                     "secret_arn": "s"}}
    resources = TenantResources.model_validate(old)
    assert resources.workspaces == {}
    record = TenantRecord(tenant_id="acme", tier="pooled", status="active", region="us-east-1", resources=resources)
    assert record.workspaces == {}
    legal = {"name": "legal", "store": {**old["store"], "schema_name": "tenant_acme__ws_legal"}, "kms_key_arn": "k2",
             "kms_alias": "alias/tenantctl/acme/ws/legal", "prefix": "tenants/acme--legal/", "queue_url": "q2",
             "dlq_url": "d2", "role_arn": "r2"}
    again = TenantRecord.model_validate_json(
        record.model_copy(update={"resources": TenantResources.model_validate({**old, "workspaces": {
            "legal": legal}})}).model_dump_json())
    assert again.workspaces["legal"].store.schema_name == "tenant_acme__ws_legal"
