"""`tenantctl cell evacuate` empties a draining cell into the other cells of its
region, one move after another, through the real CLI: refused (exit 3) while
the cell still takes tenants; a dry run says where each would go and moves
nothing; waves (`--limit`) and a run killed in the middle of a move are
resumed by the next run (two moves at once, each in a worker process); a
suspended tenant is skipped with why; `--finalize` ends the rollback windows,
after which `cell remove` retires the cell. Each tenant's history is read back
through the runtime from its new cell's store.
The tenants and both cells are gone at the end (the registry is the session's).

A project of its own on the session's sandbox: cells ``evy`` (first, the
account-and-region's metrics log group) and ``evx`` in sa-east-1 of the home
account, which no other test uses.
"""

from __future__ import annotations

import os
import re
import signal
import time
from contextlib import suppress

import psutil
import psycopg
import pytest
from fault_tools import Cli, aws, cell_count
from psycopg import sql
from runtime_tenants import jwt_settings

from tenant_runtime import TenantRuntime
from tenant_runtime.models import MovePhase
from tenantctl import naming
from tenantctl.models import TenantSpec, TenantStatus
from tenantctl.operations import cell as cells
from tenantctl.operations.provision import provision
from tenantctl.operations.suspend import set_suspended
from tenantctl.stackconfig import read_tenant, stack_file, write_tenant
from tenantctl.workspace import Workspace

pytestmark = pytest.mark.integration

REGION, FROM, TO = "sa-east-1", "evx", "evy"
UNFIT = "evz"  # committed, never applied: dedicated tenants only
ONE_SLOT = "evw"  # committed, never applied: one pooled slot
MOVED = ("ev-a", "ev-b", "ev-c")
PAUSED = "ev-s"


@pytest.fixture(scope="module")
def fleet(sandbox, tmp_path_factory) -> tuple[Cli, Workspace]:
    cli = Cli.create(sandbox, tmp_path_factory.mktemp("cell-evacuate"))
    ws = Workspace(project_dir=cli.root, cwd=cli.root)
    cells.add(ws, TO, {"region": REGION, "max_pooled_tenants": 10})
    cells.add(ws, FROM, {"region": REGION})
    for tid in (*MOVED, PAUSED):
        provision(ws, TenantSpec(id=tid, region=REGION, cell=FROM))
    set_suspended(ws, PAUSED, True)
    return cli, ws


@pytest.fixture(scope="module")
def runtime(fleet, sandbox):
    _, ws = fleet
    rt = TenantRuntime(jwt_settings(), ws.ensure_platform()["registry_table"],
                       endpoint_url=sandbox.aws_endpoint_url, region=sandbox.region, registry_ttl=0.2)
    yield rt
    rt.close()


def outcomes(run) -> dict[str, tuple[str | None, str]]:
    return {t["tenant_id"]: (t["to_cell"], t["outcome"]) for t in run.json()["tenants"]}


def test_an_undrained_cell_is_refused_and_a_dry_run_moves_nothing(fleet, sandbox):
    cli, ws = fleet
    refused = cli("cell", "evacuate", FROM, "--json")
    assert refused.returncode == 3, refused
    assert refused.json()["error"]["rule"] == "cell-not-draining"
    assert cli("cell", "evacuate", FROM, "--to", FROM, "--json").returncode == 3
    nowhere = cli("cell", "evacuate", FROM, "--to", "ev-nowhere", "--json")
    assert nowhere.returncode == 3 and nowhere.json()["error"]["message"].startswith("--to ev-nowhere: no such cell")

    assert cli("cell", "drain", FROM).returncode == 0
    plan = cli("cell", "evacuate", FROM, "--dry-run", "--json")
    assert plan.returncode == 0, plan
    assert outcomes(plan) == {**{tid: (TO, "planned") for tid in MOVED}, PAUSED: (None, "skipped")}
    assert "suspended" in next(t["detail"] for t in plan.json()["tenants"] if t["tenant_id"] == PAUSED)
    # A dry run asks each move what it would refuse: an edit of a tenant's file not applied yet.
    path = stack_file(ws.stacks_dir, "ev-c")
    committed = path.read_text()
    write_tenant(ws.stacks_dir, read_tenant(path).model_copy(update={"owner": "someone-else"}))
    try:
        edited = cli("cell", "evacuate", FROM, "--dry-run", "--json")
    finally:
        path.write_text(committed)
    assert edited.returncode == 1, edited
    refused = next(t for t in edited.json()["tenants"] if t["tenant_id"] == "ev-c")
    assert (refused["outcome"], refused["exit_code"], refused["rule"]) == ("refused", 3, "unapplied-edits")
    assert "edited since its last apply" in refused["detail"]
    assert {ws.registry.require(tid).cell for tid in MOVED} == {FROM}
    assert (cell_count(sandbox, FROM), cell_count(sandbox, TO)) == (4, 0)


def test_a_dry_run_refuses_what_each_move_of_the_run_refuses(fleet, sandbox):
    """A dry run judges each move by the move's own checks (``move.check``),
    applying no cell: `--to` a committed cell never applied that takes no
    pooled tenant refuses each move (exit 3) as the run then does, with the
    same detail, and the cell stays unapplied, the tenants where they were."""
    cli, ws = fleet
    added = cli("cell", "add", UNFIT, "--region", REGION, "--tier", "dedicated", "--write-only")
    assert added.returncode == 0, added
    try:
        plan = cli("cell", "evacuate", FROM, "--to", UNFIT, "--dry-run", "--json")
        run = cli("cell", "evacuate", FROM, "--to", UNFIT, "--json")
    finally:
        stack_file(ws.stacks_dir, naming.cell_stack(UNFIT)).unlink(missing_ok=True)

    def judged(evacuation) -> dict:
        return {t["tenant_id"]: (t["outcome"], t["exit_code"], t["rule"], t["detail"])
                for t in evacuation.json()["tenants"]
                if t["tenant_id"] in MOVED}

    assert (plan.returncode, run.returncode) == (1, 1), (plan, run)
    assert judged(plan) == judged(run), (plan, run)
    assert {outcome for outcome, _, _, _ in judged(plan).values()} == {"refused"}
    assert all(code == 3 and "takes dedicated tenants, not pooled" in detail
               for _, code, _, detail in judged(plan).values()), plan
    assert not ws.cell_outputs(UNFIT)
    assert {ws.registry.require(tid).cell for tid in MOVED} == {FROM}
    assert (cell_count(sandbox, FROM), cell_count(sandbox, TO)) == (4, 0)


def test_a_dry_run_to_a_cell_counts_the_slots_its_earlier_moves_take(fleet, sandbox):
    """`--to` a cell with one pooled slot (committed, never applied): the first
    tenant's move is planned, the next ones refused (exit 11) as the run's
    would be once the first had taken the slot; the cell stays unapplied."""
    cli, ws = fleet
    added = cli("cell", "add", ONE_SLOT, "--region", REGION, "--max-pooled", "1", "--write-only")
    assert added.returncode == 0, added
    try:
        plan = cli("cell", "evacuate", FROM, "--to", ONE_SLOT, "--dry-run", "--json")
    finally:
        stack_file(ws.stacks_dir, naming.cell_stack(ONE_SLOT)).unlink(missing_ok=True)
    assert plan.returncode == 1, plan
    judged = {t["tenant_id"]: (t["outcome"], t["exit_code"]) for t in plan.json()["tenants"]}
    assert judged == {"ev-a": ("planned", None), "ev-b": ("refused", 11), "ev-c": ("refused", 11),
                      PAUSED: ("skipped", None)}, plan
    refused = next(t["detail"] for t in plan.json()["tenants"] if t["tenant_id"] == "ev-b")
    assert f"cell {ONE_SLOT!r} has no pooled slot (1 of 1 pooled tenants placed" in refused, refused
    assert not ws.cell_outputs(ONE_SLOT)


def test_a_dry_run_reads_the_replication_room_of_its_tenants_server_once(fleet, monkeypatch):
    """A dry run judges each planned move by ``move.check``, whose read of the
    replication room of the server the tenant's store is on was one admin
    login per tenant (thousands for a large cell): the plan reads it once per
    server, beside the run's up-front read of the cell's database, and says
    what the CLI's dry run says."""
    from tenantctl import cell_database
    from tenantctl.operations.cell_evacuate import evacuate

    cli, ws = fleet
    reads, workers = [], []
    real, real_workers = cell_database.replication_room, cell_database.worker_room
    monkeypatch.setattr(cell_database, "replication_room", lambda conn: reads.append(conn.info.dbname) or real(conn))
    monkeypatch.setattr(cell_database, "worker_room", lambda conn: workers.append(conn) or real_workers(conn))
    plan = evacuate(ws, FROM, dry_run=True)
    assert {t.tenant_id: (t.to_cell, t.outcome) for t in plan.tenants} == outcomes(
        cli("cell", "evacuate", FROM, "--dry-run", "--json")), plan
    assert [t.tenant_id for t in plan.tenants if t.outcome == "planned"] == list(MOVED), plan
    assert len(reads) == 2, reads  # the cell's database up front, then one for the plan's three moves
    # The target cell's logical replication workers: up front, then once for the three moves (not three times).
    assert {t.to_cell for t in plan.tenants if t.outcome == "planned"} == {TO} and len(workers) == 2, workers


def test_a_dry_run_says_failed_where_the_run_fails_a_move(fleet, sandbox):
    """A tenant whose store's server takes no admin connection: its move fails
    before anything is created (exit 7), which the run reports as `failed`;
    the dry run reports the same (it said `refused`, a word the run keeps for
    refusals: exit 3, 5, 11)."""
    cli, ws = fleet
    record = ws.registry.require("ev-a")
    assert record.resources is not None
    gone = record.resources.store.model_copy(update={"port": 1})  # nothing listens there
    ws.registry.save(record, resources=record.resources.model_copy(update={"store": gone}))
    try:
        plan = cli("cell", "evacuate", FROM, "--dry-run", "--json")
        run = cli("cell", "evacuate", FROM, "--limit", "1", "--json")  # ev-a only: the first in id order
    finally:
        ws.registry.save(ws.registry.require("ev-a"), resources=record.resources)

    def judged(evacuation) -> tuple:
        t = next(t for t in evacuation.json()["tenants"] if t["tenant_id"] == "ev-a")
        return t["outcome"], t["exit_code"], t["detail"]

    assert (plan.returncode, run.returncode) == (1, 1), (plan, run)
    assert judged(plan) == judged(run), (plan, run)
    assert judged(plan)[:2] == ("failed", 7), plan
    assert {ws.registry.require(tid).cell for tid in MOVED} == {FROM}
    assert (cell_count(sandbox, FROM), cell_count(sandbox, TO)) == (4, 0)


def _until(proc, done) -> None:
    while not done():
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)


def test_a_terminated_parallel_run_says_interrupted_and_nothing_else(fleet, sandbox):
    """SIGTERM to `cell evacuate --parallel 2`'s whole process group (what a
    cancelled CI job and `timeout` send: the run, its worker processes, the
    manager relaying their lines) with one worker in ev-a's freeze, waiting
    out a write lock on its store's table (taken once its copy began: the
    target store's creation takes stronger locks there), and the other idle
    (ev-b and ev-c moved): exit 143, `error: interrupted` and no traceback;
    ev-a's lock released. The moves are rolled back here (the next test
    starts from none)."""
    cli, ws = fleet
    store = ws.registry.require("ev-a").resources.store
    with psycopg.connect(sandbox.pg_dsn(store.database), autocommit=True) as blocker:
        proc = cli.start("cell", "evacuate", FROM, "--parallel", "2", new_session=True)
        _until(proc, lambda: (move := ws.registry.require("ev-a").move) is not None and move.phase is not
               MovePhase.preparing)
        blocker.execute("BEGIN")  # a write under way, as far as the freeze can tell: it waits (120 s)
        blocker.execute(sql.SQL("LOCK TABLE {} IN ROW EXCLUSIVE MODE").format(
            sql.Identifier(store.schema_name, "messages")))
        _until(proc, lambda: ws.registry.require("ev-a").lock is not None and all(
            (r := ws.registry.require(tid)).move is not None and r.move.phase is MovePhase.switched and r.lock is None
            for tid in ("ev-b", "ev-c")))
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=600)
        blocker.execute("ROLLBACK")
    try:
        assert proc.returncode == 128 + signal.SIGTERM, err
        assert "error: interrupted" in err and "Traceback" not in err and "Exception ignored" not in err, err
        assert ws.registry.require("ev-a").lock is None
    finally:
        for tid in MOVED:
            if ws.registry.require(tid).move is not None:
                assert cli("move", tid, "--rollback").returncode == 0
    assert {ws.registry.require(tid).cell for tid in MOVED} == {FROM}


def test_a_parallel_run_killed_9_leaves_no_process_behind(fleet, sandbox):
    """SIGKILL to `cell evacuate --parallel 2` alone (no unwinding, no pool shutdown) while a worker is
    in a move: its workers and the manager relaying their lines end too (before: they waited for work
    forever, the busy one going on with its move), the move's lock released as on SIGTERM."""
    cli, ws = fleet
    proc = cli.start("cell", "evacuate", FROM, "--parallel", "2", new_session=True)
    try:
        _until(proc, lambda: (move := ws.registry.require("ev-a").move) is not None and move.phase is not
               MovePhase.preparing)
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 3  # the manager and two workers
        proc.kill()
        proc.wait()
        _, alive = psutil.wait_procs(children, timeout=60)
        assert not alive, alive
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()  # the pipes close once no process of the run holds them
    assert all(ws.registry.require(tid).lock is None for tid in MOVED)
    for tid in MOVED:
        if ws.registry.require(tid).move is not None:
            assert cli("move", tid, "--rollback").returncode == 0
    assert {ws.registry.require(tid).cell for tid in MOVED} == {FROM}

def test_waves_and_a_killed_run_resume_then_finalize_and_the_cell_is_removed(fleet, sandbox, runtime):
    cli, ws = fleet
    for tid in MOVED:
        runtime.store.append(runtime.context(tid), "c1", "user", f"before the move of {tid}")

    wave = cli("cell", "evacuate", FROM, "--limit", "1", "--json")
    assert wave.returncode == 0, wave
    assert outcomes(wave) == {"ev-a": (TO, "switched"), "ev-b": (None, "later"), "ev-c": (None, "later"),
                              PAUSED: (None, "skipped")}
    assert "evacuate evx: moving ev-a (1 of 1) to cell evy" in wave.stderr

    # Killed once ev-b's move is copying: the next run resumes that move, then moves ev-c.
    killed = cli("cell", "evacuate", FROM, env={"TENANTCTL_FAULT_AFTER": "move:copying"})
    assert killed.returncode != 0 and ws.registry.require("ev-b").move.phase is MovePhase.copying
    rest = cli("cell", "evacuate", FROM, "--parallel", "2")  # the resume and the next move at once
    assert rest.returncode == 0, rest
    assert "resuming ev-b (1 of 2)" in rest.stderr and "moving ev-c (2 of 2)" in rest.stderr
    # Each move's lines come from its worker process through the run's own: stamped like the run's, each
    # naming its tenant (the resumed move's note on the killed run's lock too).
    said = [re.fullmatch(r"\[ *\d+\.\ds\] (evacuate evx|move ev-[bc]): .+", line) for line in rest.stderr.splitlines()]
    assert said and all(said), rest.stderr
    assert {m[1] for m in said} == {"evacuate evx", "move ev-b", "move ev-c"}, rest.stderr
    lines = rest.stdout.splitlines()
    assert any(line.split()[:1] == ["ev-a"] and "waiting" in line for line in lines), rest.stdout
    assert "cell evx: 1 waiting, 2 switched, 1 skipped" in rest.stdout, rest.stdout
    for tid in MOVED:
        record = ws.registry.require(tid)
        assert (record.cell, record.move.phase) == (TO, MovePhase.switched)
    # CI's apply in the rollback windows: the moved tenants are their moves' (the files as the moves
    # wrote them), reported moving, not failures that keep every pipeline red until --finalize.
    preview = cli("apply", "--preview", "--match", "ev-*", "--json")
    assert preview.returncode in (0, 12), preview
    rows = {r["tenant_id"]: r for r in preview.json()["results"]}
    assert all((rows[t]["action"], rows[t]["ok"]) == ("unchanged", True) for t in MOVED), rows
    assert all(rows[t]["reason"].startswith("moving (switched, rollback window until ") for t in MOVED), rows

    # ev-a drifted out of band (its queue deleted): its finalize goes through, the posture check after it
    # fails: finalized, the check's finding beside it, exit 8 (check's), not a failed finalize (exit 1).
    aws(sandbox, "sqs", REGION).delete_queue(QueueUrl=ws.registry.require("ev-a").resources.queue_url)
    # Meanwhile its drift is the move's to end first: refresh says so, apply --refresh says why it skips it.
    drifted = cli("refresh", "ev-a")
    assert drifted.returncode == 12, drifted
    assert "ev-a: moving (switched, rollback window until " in drifted.stdout, drifted.stdout
    assert "`tenantctl move ev-a --finalize` (or `--rollback`) ends it first" in drifted.stdout, drifted.stdout
    assert "(or `provision ID`) repairs" not in drifted.stdout, drifted.stdout
    held = cli("apply", "--refresh", "--match", "ev-a")
    assert held.returncode == 0, held
    assert any(line.split()[:3] == ["ev-a", "unchanged", "ok"] and "not read for drift" in line
               for line in held.stdout.splitlines()), held.stdout
    done = cli("cell", "evacuate", FROM, "--finalize", "--parallel", "3", "--json")
    assert done.returncode == 8, done
    assert outcomes(done) == {**{tid: (TO, "finalized") for tid in MOVED}, PAUSED: (None, "skipped")}
    assert [t["tenant_id"] for t in done.json()["tenants"] if t["check"]] == ["ev-a"], done
    assert cli("provision", "ev-a").returncode == 0  # repaired
    for tid in MOVED:
        record = ws.registry.require(tid)
        assert (record.cell, record.move) == (TO, None)
        history = runtime.store.history(runtime.context(tid), "c1").messages
        assert [m.content for m in history] == [f"before the move of {tid}"]
    assert cli("cell", "remove", FROM, "--yes").returncode == 5  # the suspended tenant keeps it

    # Resumed, it goes the same way; then nothing is left and the cell is retired.
    assert cli("resume", PAUSED).returncode == 0
    assert cli("cell", "evacuate", FROM).returncode == 0
    assert cli("cell", "evacuate", FROM, "--finalize").returncode == 0
    again = cli("cell", "evacuate", FROM, "--json")
    assert again.returncode == 0 and again.json()["tenants"] == []
    assert ws.registry.require(PAUSED).status is TenantStatus.active
    assert (cell_count(sandbox, FROM), cell_count(sandbox, TO)) == (0, 4)
    removed = cli("cell", "remove", FROM, "--yes", "--json")
    assert removed.returncode == 0, removed

    # Nothing of this file is left in the shared registry or the target cell for other files' fleet-wide runs.
    for tid in (*MOVED, PAUSED):
        gone = cli("deprovision", tid, "--yes", "--no-final-backup", "--purge-data")
        assert gone.returncode == 0, gone
    assert cli("cell", "remove", TO, "--yes").returncode == 0
