"""A tenant's second stack and role (key generation >= 1, a move to another
account or region) never collide with another tenant's names."""

from __future__ import annotations

import pytest

from tenant_runtime.models import MovePhase, StoreConnection, TenantMove
from tenantctl import naming
from tenantctl.checks.iam_eval import _glob
from tenantctl.models import CellSpec, TenantRecord, TenantSpec, TenantStatus, Tier

IDS = ["acme", "acme-k1", "a", "b-k2", "k1", "acme-corp"]


@pytest.mark.parametrize("tenant_id", IDS)
def test_a_stack_name_parses_back_to_its_tenant_and_generation(tenant_id):
    for generation in (0, 1, 2, 17, naming.MAX_KEY_GENERATION):
        assert naming.stack_tenant(naming.stack_name(tenant_id, generation)) == (tenant_id, generation)


def test_no_tenant_id_nor_cell_name_holds_the_separator():
    # The separator is what keeps `acme.k1` (acme's second stack) apart from tenant `acme-k1`'s.
    for name in ("acme.k1", "a.b", ".k1", "acme."):
        assert naming.broken_rule(name) is not None
        assert naming.cell_name_problem(name) is not None
        with pytest.raises(ValueError):
            TenantSpec(id=name)
        with pytest.raises(ValueError):
            CellSpec(name=name)


@pytest.mark.parametrize("stack", ["platform", "cell-eu1", "acme.k0", "acme.k01", "acme.x1", "acme.k", ".k1",
                                   "acme.k1.k2", "acme.k100"])
def test_names_no_tenant_stack_has_are_not_read_as_one(stack):
    assert naming.stack_tenant(stack) is None


def test_generation_roles_of_all_tenants_differ_and_belong_to_their_tenant():
    roles = {(t, g): naming.iam_role_name(t, g) for t in IDS for g in (0, 1, 2)}
    assert len(set(roles.values())) == len(roles)
    assert naming.iam_role_name("acme") == "tenantctl-acme-app"  # generation 0 is as it always was
    assert naming.iam_role_name("acme", 1) == "tenantctl-acme.k1-app"
    for (tenant_id, _), role in roles.items():
        assert naming.tenant_ids_in(role, tenant_id) == set(), role
        for other in IDS:
            if other != tenant_id:
                assert naming.tenant_ids_in(role, other) == {tenant_id}, (role, other)
        # The runtime role's grant (`tenantctl-*-app`, as IAM matches it) reaches it.
        assert _glob(naming.tenant_roles("us-east-1"), f"arn:aws:iam::222222222222:role/{role}")
        assert naming._IAM_ROLE.match(role)


def test_an_id_too_long_for_a_new_role_is_told_before_anything_is_made():
    longest = "a" * naming.max_id_length()
    assert naming.broken_rule(longest) is None and naming.key_generation_problem(longest, 0) is None
    assert "64 characters" in naming.key_generation_problem(longest, 1)
    assert naming.key_generation_problem("acme", 1) is None
    assert "outside" in naming.key_generation_problem("acme", naming.MAX_KEY_GENERATION + 1)



def test_a_workspace_role_of_a_generation_belongs_to_its_tenant_and_is_checked_for_length():
    role = naming.ws_iam_role_name("acme", "legal", 1)
    assert role == "tenantctl-acme--legal.k1-app"
    assert naming.ws_iam_role_name("acme", "legal") == "tenantctl-acme--legal-app"
    assert naming.tenant_ids_in(role, "acme") == set() and naming.tenant_ids_in(role, "acme-corp") == {"acme"}
    assert _glob(naming.tenant_roles("us-east-1"), f"arn:aws:iam::222222222222:role/{role}")
    assert naming.ws_key_generation_problem("acme", "legal", 1) is None
    longest = "w" * naming.max_workspace_length("acme")  # fits generation 0, not the 3 more characters of `.k1`
    assert naming.ws_key_generation_problem("acme", longest, 0) is None
    assert "64 characters" in naming.ws_key_generation_problem("acme", longest, 1)


def test_a_record_names_its_stacks():
    record = TenantRecord(tenant_id="acme", tier=Tier.pooled, status=TenantStatus.active, region="us-east-1")
    assert record.current_stack == "acme" and record.stacks == ["acme"]
    # Records written before the field decode with the stack named by the id.
    assert TenantRecord.model_validate_json(record.model_dump_json(exclude={"stack"})).current_stack == "acme"
    moved = record.model_copy(update={"stack": "acme.k1"})
    assert moved.current_stack == "acme.k1" and moved.stacks == ["acme.k1"]


def test_an_open_move_to_a_second_stack_lists_both_until_it_ends():
    store = StoreConnection(endpoint="db", port=5432, database="d", schema_name="t_acme", role="acme",
                            secret_arn="arn:aws:secretsmanager:us-east-1:1:secret:x")
    record = TenantRecord(tenant_id="acme", tier=Tier.pooled, status=TenantStatus.active, region="us-east-1")
    move = TenantMove(from_tier=Tier.pooled, to_tier=Tier.pooled, old_store=store, to_stack="acme.k1",
                      from_stack="acme")
    preparing = record.model_copy(update={"move": move})
    switched = preparing.model_copy(update={"stack": "acme.k1", "move": move.model_copy(update={
        "phase": MovePhase.switched})})
    assert preparing.stacks == ["acme", "acme.k1"]  # served from the first
    assert switched.stacks == ["acme.k1", "acme"]  # the old one stays listed through the rollback window
    assert switched.model_copy(update={"move": None}).stacks == ["acme.k1"]  # finalized
    assert preparing.model_copy(update={"move": None}).stacks == ["acme"]  # rolled back
    # A move within the stack (to_stack None) lists the one stack.
    assert record.model_copy(update={"move": move.model_copy(update={"to_stack": None, "from_stack": None})}
                             ).stacks == ["acme"]
