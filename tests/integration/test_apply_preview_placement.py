"""`tenantctl apply --preview` refuses a new tenant where the apply's placement
would: a green preview is a green apply. Several new tenants naming one cell
are placed in turn (each counting the slots the ones before it take), a
draining cell and a region without a cell are refused, and the apply then
does what its preview said.

A project of its own on the session's sandbox, one cell ``q7-pv`` in
eu-south-1 of account 888888888888, which no other test uses (cell names,
accounts and regions are shared by every project on the sandbox).
"""

from __future__ import annotations

import pytest
from fault_tools import Cli

from tenantctl.models import CellSpec, TenantSpec
from tenantctl.stackconfig import write_cell, write_tenant

pytestmark = pytest.mark.integration

CELL, REGION, ACCOUNT = "q7-pv", "eu-south-1", "888888888888"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/tenantctl-cell"
NEW = ("q7-pv-a", "q7-pv-b")  # two new tenants for the cell's one slot
MATCH = ("--match", "q7-pv-*")


@pytest.fixture(scope="module")
def cli(sandbox, tmp_path_factory) -> Cli:
    cli = Cli.create(sandbox, tmp_path_factory.mktemp("apply-preview-placement"))
    write_cell(cli.root / "stacks", CellSpec())
    run = cli("cell", "add", CELL, "--region", REGION, "--account-role", ROLE, "--max-pooled", "1", "--json")
    assert run.returncode == 0, run
    return cli


def apply(cli: Cli, *args: str) -> tuple[int, dict[str, dict]]:
    """`tenantctl apply --json ARGS` -> (exit code, the run's tenant results by id)."""
    run = cli("apply", "--json", *args)
    assert run.stdout.startswith("{"), run
    assert run.json()["exit_code"] == run.returncode
    return run.returncode, {r["tenant_id"]: r for r in run.json()["results"]}


def test_new_tenants_naming_one_cell_are_previewed_against_its_slots_in_turn(cli):
    for tenant_id in NEW:
        write_tenant(cli.root / "stacks", TenantSpec(id=tenant_id, region=REGION, cell=CELL))
    rc, results = apply(cli, "--preview", *MATCH)
    assert rc == 1, results  # one of them would be refused: not "changes pending"
    assert sorted(r["ok"] for r in results.values()) == [False, True], results
    refused = next(r for r in results.values() if not r["ok"])
    assert refused["action"] == "create" and f"cell {CELL} cannot take it" in refused["error"], refused
    assert "1 of 1 pooled tenants placed" in refused["error"] and "by this run" in refused["error"], refused

    rc, applied = apply(cli, *MATCH)  # what the preview said: one placed, the other refused
    assert rc == 1, applied
    assert sorted(r["ok"] for r in applied.values()) == [False, True], applied
    placed = next(t for t, r in applied.items() if r["ok"])
    assert "1 of 1 pooled tenants placed" in applied[next(t for t in NEW if t != placed)]["error"]
    assert cli("status", placed, "--json").json()["cell"] == CELL


def test_a_draining_cell_and_a_region_without_a_cell_are_refused_by_the_preview(cli):
    stacks = cli.root / "stacks"
    (stacks / "Pulumi.q7-pv-a.yaml").unlink(missing_ok=True)
    (stacks / "Pulumi.q7-pv-b.yaml").unlink(missing_ok=True)
    assert cli("cell", "add", CELL, "--max-pooled", "3", "--json").returncode == 0
    assert cli("cell", "drain", CELL).returncode == 0
    try:
        write_tenant(stacks, TenantSpec(id="q7-pv-c", region=REGION, cell=CELL))
        write_tenant(stacks, TenantSpec(id="q7-pv-d", region="af-south-1"))
        rc, results = apply(cli, "--preview", "--match", "q7-pv-c", "--match", "q7-pv-d")
        assert rc == 1, results
        assert {t: (r["action"], r["ok"]) for t, r in results.items()} == {
            "q7-pv-c": ("create", False), "q7-pv-d": ("create", False)}
        assert f"cell {CELL}: draining" in results["q7-pv-c"]["error"], results
        assert "af-south-1 has no cell" in results["q7-pv-d"]["error"], results
        # provision --preview agrees (exit 11: no cell with room)
        assert cli("provision", "q7-pv-c", "--region", REGION, "--preview").returncode == 11
    finally:
        assert cli("cell", "drain", CELL, "--undo").returncode == 0
    rc, results = apply(cli, "--preview", "--match", "q7-pv-c")
    assert rc == 12 and results["q7-pv-c"]["ok"], results


def test_a_match_preview_of_a_tenant_in_a_cell_not_applied_yet_is_pending_as_the_run_applies_it(cli):
    """`cell add --write-only` then a tenant naming it, previewed by a `--match`
    run (which plans no cell): on the sandbox the run's placement applies the
    cell first, so the preview says pending (exit 12), as `provision --preview`
    does, instead of failing on the cell's outputs."""
    written = cli("cell", "add", "q7-pw", "--region", REGION, "--account-role", ROLE, "--write-only", "--json")
    assert written.returncode == 0, written
    write_tenant(cli.root / "stacks", TenantSpec(id="q7-pw-a", region=REGION, cell="q7-pw"))
    rc, results = apply(cli, "--preview", "--match", "q7-pw-a")
    assert rc == 12, results
    assert results["q7-pw-a"]["ok"] and "cell q7-pw is not applied yet" in results["q7-pw-a"]["reason"], results
    assert cli("provision", "q7-pw-a", "--region", REGION, "--preview").returncode == 12
