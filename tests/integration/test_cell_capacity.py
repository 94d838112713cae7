"""What a cell's live database has room for, through the real CLI: moves are
refused (exit 3, rule ``replication-slots``, the figures named, nothing
started or created) when the source server's free replication slots and WAL
senders cannot hold their copies (`cell evacuate --parallel N`, `move`);
and (rule ``replication-workers``) when the target server's free logical
replication workers cannot hold their subscriptions, a copy none of whose
tables starts saying why;
`cell show` compares the pooled logins' connection cap with the live
max_connections and `cell add` refuses a raised cap it cannot hold (exit 3,
rule ``connection-budget``) without --allow-overcommit, and says so when the
database takes no connection; `apply` of a cell file raising it by hand is
refused the same way unless the file says ``allow_overcommit``. `apply --parallel`'s workers' stderr lines come
out through the run, stamped and naming their tenant.

A project of its own on the session's sandbox: cells ``e2-a`` and ``e2-b``
in ap-southeast-2 of the home account, which no other test uses; tenants
``e2-*``. The sandbox's slots are taken by physical slots ``e2_fill_*`` made
and dropped here (one server holds every cell's database there), its
logical replication workers by idle enabled subscriptions ``e2_idle_*``.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from fault_tools import Cli, aws, cell_count, platform_outputs, write_record
from faults import FAULT_AFTER_ENV, FAULT_EXIT_CODE
from move_tools import free_slots
from psycopg import sql

from tenant_runtime.models import MovePhase
from tenant_runtime.registry import LEASE_UNTIL, counter_key
from tenantctl.cell_database import replication_room, worker_room
from tenantctl.errors import TargetUnavailable
from tenantctl.models import TenantSpec
from tenantctl.operations import cell as cells
from tenantctl.operations import mover
from tenantctl.operations.move import move
from tenantctl.operations.provision import provision
from tenantctl.registry import new_lock
from tenantctl.stackconfig import read_cell, read_tenant, write_cell, write_tenant
from tenantctl.transfer import store_sync
from tenantctl.workspace import Workspace

pytestmark = pytest.mark.integration

REGION, FROM, TO = "ap-southeast-2", "e2-a", "e2-b"
PART, PAPER = "e2-c", "e2-d"  # a cell add killed half way, a cell written and never applied
TENANTS = ("e2-t1", "e2-t2")


@pytest.fixture(scope="module")
def fleet(sandbox, tmp_path_factory) -> Iterator[tuple[Cli, Workspace]]:
    cli = Cli.create(sandbox, tmp_path_factory.mktemp("cell-capacity"))
    ws = Workspace(project_dir=cli.root, cwd=cli.root)
    cells.add(ws, TO, {"region": REGION, "max_pooled_tenants": 4})
    cells.add(ws, FROM, {"region": REGION, "max_pooled_tenants": 4})
    for tid in TENANTS:
        provision(ws, TenantSpec(id=tid, region=REGION, cell=FROM))
    yield cli, ws
    # Nothing of this file is left in the shared registry for other files' fleet-wide runs.
    for tid in TENANTS:
        assert cli("deprovision", tid, "--yes", "--no-final-backup", "--purge-data").returncode == 0
    for name in (FROM, TO):
        assert cli("cell", "remove", name, "--yes").returncode == 0


@contextmanager
def free_workers(sandbox, left: int) -> Iterator[None]:
    """The sandbox server's logical replication workers held until ``left`` are free: enabled
    subscriptions ``e2_idle_*`` made without connecting (their apply workers retry a port nothing
    listens on), disabled and dropped without a slot after."""
    with psycopg.connect(sandbox.pg_dsn(), autocommit=True) as conn:
        names: list[sql.Identifier] = []
        try:
            for i in range(worker_room(conn).free - left):
                name = sql.Identifier(f"e2_idle_{i}")
                conn.execute(sql.SQL("CREATE SUBSCRIPTION {} CONNECTION 'host=127.0.0.1 port=1' PUBLICATION p "
                                     "WITH (connect = false, slot_name = 'e2_idle')").format(name))
                names.append(name)
                conn.execute(sql.SQL("ALTER SUBSCRIPTION {} ENABLE").format(name))
            assert worker_room(conn).free == left
            yield
        finally:
            for name in names:
                for step in ("ALTER SUBSCRIPTION {} DISABLE", "ALTER SUBSCRIPTION {} SET (slot_name = NONE)",
                             "DROP SUBSCRIPTION {}"):
                    conn.execute(sql.SQL(step).format(name))


def untouched(cli: Cli, ws: Workspace, sandbox, stack_files: dict[str, str]) -> None:
    for tid in TENANTS:
        record = ws.registry.require(tid)
        assert (record.cell, record.move) == (FROM, None), record
        assert cli.stack_file(tid).read_text() == stack_files[tid]
    assert (cell_count(sandbox, FROM), cell_count(sandbox, TO)) == (2, 0)


def test_moves_the_source_server_has_no_replication_room_for_are_refused_before_anything_starts(fleet, sandbox):
    cli, ws = fleet
    assert cli("cell", "drain", FROM).returncode == 0
    stack_files = {tid: cli.stack_file(tid).read_text() for tid in TENANTS}
    with psycopg.connect(sandbox.pg_dsn(), autocommit=True) as conn:
        per_copy = replication_room(conn).per_copy

    with free_slots(sandbox, per_copy + 1):  # one copy fits, not two
        wide = cli("cell", "evacuate", FROM, "--parallel", "2", "--json")
        assert wide.returncode == 3, wide
        error = wide.json()["error"]
        assert error["rule"] == "replication-slots"
        assert "room for 1 move copy at once, not 2 (--parallel 2)" in error["message"]
        assert "max_replication_slots" in error["message"] and "max_wal_senders" in error["message"]
        assert "give --parallel 1 or less" in error["message"]
        untouched(cli, ws, sandbox, stack_files)
        # --parallel beyond the tenants to move asks for as many copies as there are tenants.
        assert "not 2 (--parallel 5)" in cli("cell", "evacuate", FROM, "--parallel", "5", "--json").json()[
            "error"]["message"]

    with free_slots(sandbox, per_copy - 1):  # not even one copy
        one = cli("move", TENANTS[0], "--cell", TO, "--json")
        assert one.returncode == 3, one
        assert one.json()["error"]["rule"] == "replication-slots"
        assert "no room for a move's copy" in one.json()["error"]["message"]
        evacuation = cli("cell", "evacuate", FROM, "--json")  # the default, one at a time, too
        assert evacuation.returncode == 3 and evacuation.json()["error"]["rule"] == "replication-slots", evacuation
        untouched(cli, ws, sandbox, stack_files)
        # A finalize copies nothing: not refused for want of slots (nothing to finalize here).
        assert cli("cell", "evacuate", FROM, "--finalize", "--json").returncode == 0
        assert cli("cell", "evacuate", FROM, "--dry-run", "--json").returncode == 3
    assert cli("cell", "drain", FROM, "--undo").returncode == 0


def test_moves_the_target_server_has_no_replication_workers_for_are_refused_before_anything_starts(fleet,
                                                                                                  sandbox):
    """A copy's subscription holds an apply worker on its new store's server, the copies there
    share one table-sync worker: with one worker free `move` exits 3 (its tables would wait in
    `init` without end), `cell evacuate` sums its copies per target server (placed or --to)."""
    cli, ws = fleet
    stack_files = {tid: cli.stack_file(tid).read_text() for tid in TENANTS}
    with free_workers(sandbox, 1):
        one = cli("move", TENANTS[0], "--cell", TO, "--json")
        assert one.returncode == 3, one
        error = one.json()["error"]
        assert error["rule"] == "replication-workers"
        assert f"cell {TO!r}'s database has no room for a move's copy" in error["message"]
        assert "max_logical_replication_workers" in error["message"] and "max_worker_processes" in error["message"]
        untouched(cli, ws, sandbox, stack_files)
    assert cli("cell", "drain", FROM).returncode == 0
    try:
        with free_workers(sandbox, 2):  # one copy's apply worker and the table-sync one: not two copies
            for to in ([], ["--to", TO]):
                wide = cli("cell", "evacuate", FROM, *to, "--parallel", "2", "--json")
                assert wide.returncode == 3, wide
                assert wide.json()["error"]["rule"] == "replication-workers"
                assert "room for 1 move copy at once, not 2 (--parallel 2)" in wide.json()["error"]["message"]
            untouched(cli, ws, sandbox, stack_files)
            # One at a time, the first move's way back (kept on the old store's server, this one) would
            # leave the second copy one worker: refused up front, not by the second move mid-run.
            one_by_one = cli("cell", "evacuate", FROM, "--json")
            assert one_by_one.returncode == 3, one_by_one
            error = one_by_one.json()["error"]
            assert error["rule"] == "replication-workers"
            assert "2 logical replication workers free, not the 3 the run's 2 moves need" in error["message"]
            assert "give --limit 1 or less" in error["message"] and "max_active_replication_origins" in \
                error["message"]
            untouched(cli, ws, sandbox, stack_files)
            assert cli("cell", "evacuate", FROM, "--limit", "1", "--dry-run").returncode == 0
        with free_workers(sandbox, 3):  # two copies: no worker counted twice
            assert cli("cell", "evacuate", FROM, "--parallel", "2", "--dry-run").returncode == 0
            assert cli("cell", "evacuate", FROM, "--dry-run").returncode == 0  # a copy's worker becomes its way back
    finally:
        for tid in TENANTS:  # what a run refused mid-way left
            if ws.registry.require(tid).move is not None:
                assert cli("move", tid, "--rollback").returncode == 0
        assert cli("cell", "drain", FROM, "--undo").returncode == 0


def test_a_copy_no_table_of_which_starts_says_why_once_and_waits_on(fleet, sandbox, monkeypatch):
    """No table's copy starts while the server runs no table-sync worker for a subscription (set
    live, as a server whose workers are taken leaves it): the wait says why and what to do, once,
    and goes on; the copy ends once they run again."""
    cli, ws = fleet
    lines: list[str] = []

    def sync_workers(setting: str) -> None:
        with psycopg.connect(sandbox.pg_dsn(), autocommit=True) as conn:
            conn.execute(f"ALTER SYSTEM {setting}")
            conn.execute("SELECT pg_reload_conf()")

    def said(line: str) -> None:
        lines.append(line)
        if "no table copy started" in line:
            sync_workers("RESET max_sync_workers_per_subscription")

    monkeypatch.setattr(mover, "STALLED_AFTER", 0.0)
    sync_workers("SET max_sync_workers_per_subscription = 0")
    try:
        assert move(ws, TENANTS[0], cell=TO, progress=said).phase is MovePhase.switched
    finally:
        sync_workers("RESET max_sync_workers_per_subscription")
        assert cli("move", TENANTS[0], "--rollback").returncode == 0
    stalled = [line for line in lines if "no table copy started" in line]
    assert len(stalled) == 1, lines
    assert "max_logical_replication_workers" in stalled[0] and f"`tenantctl move {TENANTS[0]}`" in stalled[0]


def test_a_placement_refusal_says_each_cells_reason_once(fleet, sandbox):
    """The reasons are in the one-line message (what apply's summary shows too) and in
    --json's ``details``: stderr does not list them again under the message."""
    cli, ws = fleet
    for name in (FROM, TO):
        assert cli("cell", "drain", name).returncode == 0
    try:
        forced = cli("provision", "e2-x", "--region", REGION, "--cell", TO, "--json")
        anywhere = cli("provision", "e2-x", "--region", REGION, "--json")
    finally:
        for name in (FROM, TO):
            assert cli("cell", "drain", name, "--undo").returncode == 0
    assert forced.returncode == 11, forced
    assert forced.json()["error"]["details"] == [f"cell {TO}: draining"]
    assert forced.stderr.count("draining") == 1, forced.stderr
    assert anywhere.returncode == 11, anywhere
    assert sorted(anywhere.json()["error"]["details"]) == [f"cell {FROM}: draining", f"cell {TO}: draining"]
    assert anywhere.stderr.count("draining") == 2, anywhere.stderr
    assert ws.registry.get("e2-x") is None and not cli.stack_file("e2-x").exists()


def test_evacuate_counts_only_the_copies_that_take_a_new_slot(fleet, sandbox, monkeypatch):
    """A move out of the cell resumed after its copy took its slot (its
    subscription goes on copying without tenantctl) takes no new copy's room
    on the cell's database: `cell evacuate` resumes it when no new copy
    fits there, and still refuses a run with a fresh move that needs one."""
    cli, ws = fleet
    copying, fresh = TENANTS
    real_wait = store_sync.wait

    def stopped_once_copied(what, done, timeout, interval=0.05):
        took = real_wait(what, done, timeout, interval)
        if what == "initial copy":  # as a run killed right after its copy leaves it
            raise TargetUnavailable("stopped by the test once copied")
        return took

    assert cli("cell", "drain", FROM).returncode == 0
    monkeypatch.setattr(store_sync, "wait", stopped_once_copied)
    with pytest.raises(TargetUnavailable, match="stopped by the test"):
        move(ws, copying, cell=TO)
    monkeypatch.undo()
    assert ws.registry.require(copying).move.phase is MovePhase.copying
    with psycopg.connect(sandbox.pg_dsn(), autocommit=True) as conn:
        per_copy = replication_room(conn).per_copy
    try:
        with free_slots(sandbox, per_copy - 1):  # no new copy fits; the way back's one slot does
            both = cli("cell", "evacuate", FROM, "--json")
            assert both.returncode == 3 and both.json()["error"]["rule"] == "replication-slots", both
            assert ws.registry.require(copying).move.phase is MovePhase.copying  # nothing started
            assert cli("suspend", fresh).returncode == 0  # skipped: only the resumed copy is planned
            resumed = cli("cell", "evacuate", FROM, "--json")
            assert resumed.returncode == 0, resumed
            assert {t["tenant_id"]: t["outcome"] for t in resumed.json()["tenants"]} == {
                copying: "switched", fresh: "skipped"}
    finally:
        assert cli("move", copying, "--rollback").returncode == 0
        assert cli("resume", fresh).returncode == 0
        assert cli("cell", "drain", FROM, "--undo").returncode == 0
    assert ws.registry.require(copying).cell == FROM


def test_evacuate_counts_the_way_back_of_a_move_resumed_in_its_freeze(fleet, sandbox, monkeypatch):
    """A move stopped in its freeze once its copy's link was stopped (its
    subscription gone, its way back not made yet) resumes to make that way
    back on the cell's own server: `cell evacuate` counts it up front and
    refuses the run (exit 3, nothing started) where no worker is free for it,
    rather than switching with a way back no worker ever runs."""
    cli, ws = fleet
    frozen, fresh = TENANTS
    real_start = store_sync.start

    def stopped_before_the_way_back(connect, link, *args, copy_data=True, **kwargs):
        if not copy_data:  # as a run killed between the link's stop and its way back leaves it
            raise TargetUnavailable("stopped by the test before the way back")
        return real_start(connect, link, *args, copy_data=copy_data, **kwargs)

    assert cli("cell", "drain", FROM).returncode == 0
    assert cli("suspend", fresh).returncode == 0  # skipped: only the resumed move is planned
    monkeypatch.setattr(store_sync, "start", stopped_before_the_way_back)
    try:
        with pytest.raises(TargetUnavailable, match="stopped by the test"):
            move(ws, frozen, cell=TO)
        monkeypatch.undo()
        assert ws.registry.require(frozen).move.phase is MovePhase.freezing
        with free_workers(sandbox, 0):
            resumed = cli("cell", "evacuate", FROM, "--json")
            assert resumed.returncode == 3, resumed
            error = resumed.json()["error"]
            assert error["rule"] == "replication-workers" and "the run's 1 moves need" in error["message"], error
            assert ws.registry.require(frozen).move.phase is MovePhase.freezing  # nothing started
    finally:
        monkeypatch.undo()
        assert cli("move", frozen, "--rollback").returncode == 0
        assert cli("resume", fresh).returncode == 0
        assert cli("cell", "drain", FROM, "--undo").returncode == 0
    assert ws.registry.require(frozen).cell == FROM


def test_apply_parallel_workers_say_their_lines_through_the_run_stamped_and_naming_their_tenant(fleet, sandbox):
    cli, ws = fleet
    # An update for each tenant; the first one's record locked by a run that died, which the worker
    # applying it clears and notes (on the worker's stderr until now: unstamped, no tenant).
    for tid in TENANTS:
        write_tenant(ws.stacks_dir, read_tenant(cli.stack_file(tid)).model_copy(update={"db_connection_limit": 5}))
    gone = subprocess.Popen(["true"])
    gone.wait()
    record = ws.registry.require(TENANTS[0])
    write_record(sandbox, record.model_copy(update={"lock": new_lock("provision").model_copy(
        update={"pid": gone.pid})}))

    run = cli("apply", "--match", "e2-t*", "--parallel", "2", "--json")
    assert run.returncode == 0, run
    assert {r["tenant_id"]: r["action"] for r in run.json()["results"]} == dict.fromkeys(TENANTS, "update")
    note = re.compile(r"\[ *\d+\.\ds\] e2-t1: note: tenant 'e2-t1': the provision holding its lock died .+")
    assert [line for line in run.stderr.splitlines() if note.fullmatch(line)], run.stderr
    assert "lock died" not in run.stderr.replace("e2-t1: note: tenant 'e2-t1': the provision holding its lock "
                                                 "died", ""), run.stderr  # said once, tagged
    assert ws.registry.require(TENANTS[0]).lock is None


def test_cell_show_reads_its_live_connections_and_add_refuses_a_cap_they_cannot_hold(fleet, sandbox):
    cli, ws = fleet
    with psycopg.connect(sandbox.pg_dsn(), autocommit=True) as conn:
        most = int(conn.execute("SHOW max_connections").fetchone()[0])
    shown = cli("cell", "show", TO, "--json")
    assert shown.returncode == 0, shown
    budget = shown.json()["connections"]
    assert (budget["cap"], budget["max_connections"], budget["overcommits"], budget["unread"]) == (40, most, False,
                                                                                                    None)
    assert budget["room"] == most - budget["reserved"] - budget["platform"] > 40
    assert "fits" in cli("cell", "show", TO).stdout

    # A cap the room cannot hold: refused, nothing written; with --allow-overcommit written and warned.
    before = (ws.stacks_dir / f"Pulumi.cell-{TO}.yaml").read_text()
    over = str(budget["room"] // 10 + 1)
    refused = cli("cell", "add", TO, "--max-pooled", over, "--write-only", "--json")
    assert refused.returncode == 3, refused
    error = refused.json()["error"]
    assert error["rule"] == "connection-budget"
    assert f"max_pooled_tenants {over} x db_connection_limit 10 = {int(over) * 10} connections" in error["message"]
    assert f"max_connections {most} - {budget['reserved']} reserved - {budget['platform']}" in error["message"]
    assert (ws.stacks_dir / f"Pulumi.cell-{TO}.yaml").read_text() == before
    allowed = cli("cell", "add", TO, "--max-pooled", over, "--write-only", "--allow-overcommit", "--json")
    assert allowed.returncode == 0, allowed
    assert "--allow-overcommit" in allowed.stderr
    written = read_cell(ws.stacks_dir, TO)  # the file says it (what `apply` of it reads)
    assert (written.max_pooled_tenants, written.allow_overcommit) == (int(over), True)
    assert cli("cell", "show", TO, "--json").json()["connections"]["overcommits"] is True
    # Lowered: never refused (--no-allow-overcommit takes the file's word back).
    back = cli("cell", "add", TO, "--max-pooled", "4", "--no-allow-overcommit", "--write-only", "--json")
    assert back.returncode == 0 and (ws.stacks_dir / f"Pulumi.cell-{TO}.yaml").read_text() == before, back

    # A database that takes no admin connection is said, not a failure.
    arn = ws.cell_outputs(TO)["db_admin_secret_arn"]
    sm = aws(sandbox, "secretsmanager", arn.split(":")[3])
    secret = sm.get_secret_value(SecretId=arn)["SecretString"]
    sm.put_secret_value(SecretId=arn, SecretString=json.dumps({**json.loads(secret), "password": "not-it"}))
    try:
        blind = cli("cell", "show", TO, "--json")
        refusal_free = cli("cell", "add", TO, "--max-pooled", over, "--write-only", "--json")
    finally:
        sm.put_secret_value(SecretId=arn, SecretString=secret)
    assert blind.returncode == 0, blind
    unread = blind.json()["connections"]
    assert unread["overcommits"] is None and "took no admin connection" in unread["unread"], unread
    assert refusal_free.returncode == 0 and "not compared with its database's" in refusal_free.stderr, refusal_free
    assert cli("cell", "add", TO, "--max-pooled", "4", "--write-only").returncode == 0


def test_apply_refuses_a_cell_file_raising_its_cap_past_the_room_unless_the_file_allows_it(fleet, sandbox):
    """The CI path: a cell file edited by hand and committed. The same check as
    `cell add`, against the cap the cell was last applied at (recorded on its up)."""
    cli, ws = fleet
    applied = read_cell(ws.stacks_dir, TO)
    budget = cli("cell", "show", TO, "--json").json()["connections"]
    assert budget["cap"] == applied.connection_cap == 40, budget
    over = budget["room"] // 10 + 1

    def apply(*args: str) -> tuple[object, dict]:
        run = cli("apply", "--cell", TO, *args, "--json")
        [cell] = run.json()["cells"]
        return run, cell

    def stack_file_state() -> str:
        return {c["name"]: c["applied"] for c in cli("cell", "list", "--json").json()["cells"]}[TO]

    write_cell(ws.stacks_dir, applied.model_copy(update={"max_pooled_tenants": over}))
    for args in (("--preview",), ()):
        refused, cell = apply(*args)
        assert refused.returncode == 1, refused
        assert (cell["action"], cell["ok"], cell["rule"]) == ("invalid", False, "connection-budget"), cell
        assert f"max_pooled_tenants {over} x db_connection_limit 10 = {over * 10} connections" in cell["error"]
        assert "allow_overcommit: true" in cell["error"]
    assert stack_file_state() == "changed since"  # not applied

    # The file says it deliberately: applied, with a warning.
    write_cell(ws.stacks_dir, applied.model_copy(update={"max_pooled_tenants": over, "allow_overcommit": True}))
    allowed, cell = apply()
    assert allowed.returncode == 0 and (cell["action"], cell["ok"]) == ("update", True), allowed
    assert [w for w in cell["warnings"] if "allow_overcommit" in w], cell
    assert "allow_overcommit" in allowed.stderr
    assert stack_file_state() == "as committed"

    # The cap kept (allow_overcommit gone, another setting changed) and lowered: never refused.
    write_cell(ws.stacks_dir, applied.model_copy(update={"max_pooled_tenants": over, "abort_multipart_days": 3}))
    kept, cell = apply()
    assert kept.returncode == 0 and (cell["action"], cell["warnings"]) == ("update", []), kept
    write_cell(ws.stacks_dir, applied)
    lowered, cell = apply()
    assert lowered.returncode == 0 and cell["action"] == "update", lowered
    assert stack_file_state() == "as committed"

    # What the platform's own logins keep is the cell's to say; it deploys nothing.
    most, reserved = budget["max_connections"], budget["reserved"]
    write_cell(ws.stacks_dir, applied.model_copy(update={"platform_connections": most - reserved - 39}))
    tight = cli("cell", "show", TO, "--json").json()["connections"]
    assert (tight["platform"], tight["room"], tight["overcommits"]) == (most - reserved - 39, 39, True), tight
    assert stack_file_state() == "as committed"
    write_cell(ws.stacks_dir, applied)


def test_platform_connections_leaving_tenant_logins_less_than_the_cap_is_refused_like_a_raise(fleet, sandbox):
    """``platform_connections`` deploys nothing, but what it keeps is taken off the
    room tenant logins have: a change growing what the cell claims of its database
    (cap + platform_connections) past max_connections less the reserved ones is
    refused by `cell add` (exit 3, nothing written) and `apply` (the cell invalid,
    exit 1) unless allow_overcommit; once accepted, apply records it (no up), and
    a step back is never refused."""
    cli, ws = fleet
    applied = read_cell(ws.stacks_dir, TO)
    budget = cli("cell", "show", TO, "--json").json()["connections"]
    tight = budget["max_connections"] - budget["reserved"] - (applied.connection_cap - 1)  # room: cap - 1
    before = (ws.stacks_dir / f"Pulumi.cell-{TO}.yaml").read_text()

    refused = cli("cell", "add", TO, "--platform-connections", str(tight), "--write-only", "--json")
    assert refused.returncode == 3, refused
    error = refused.json()["error"]
    assert error["rule"] == "connection-budget", error
    assert f"platform_connections {tight}" in error["message"] and "--platform-connections" in error["message"]
    assert (ws.stacks_dir / f"Pulumi.cell-{TO}.yaml").read_text() == before
    assert cli("cell", "add", TO, "--platform-connections", "100000", "--write-only").returncode == 3

    # The CI path: the file edited by hand and committed.
    write_cell(ws.stacks_dir, applied.model_copy(update={"platform_connections": tight}))
    try:
        for args in (("--preview",), ()):
            run = cli("apply", "--cell", TO, *args, "--json")
            assert run.returncode == 1, run
            [cell] = run.json()["cells"]
            assert (cell["action"], cell["rule"]) == ("invalid", "connection-budget"), cell
        write_cell(ws.stacks_dir, applied.model_copy(update={"platform_connections": tight,
                                                             "allow_overcommit": True}))
        run = cli("apply", "--cell", TO, "--json")
        [cell] = run.json()["cells"]
        assert run.returncode == 0 and cell["action"] == "update" and not cell["changes"], run  # no up
        assert f"platform_connections {applied.platform_connections} → {tight}" in cell["reason"], cell
        assert [w for w in cell["warnings"] if "allow_overcommit" in w], cell
        again = cli("apply", "--cell", TO, "--json")
        assert again.json()["cells"][0]["action"] == "unchanged", again  # recorded: nothing more to do
        # Without allow_overcommit, the same platform_connections is no raise of what was accepted.
        write_cell(ws.stacks_dir, applied.model_copy(update={"platform_connections": tight}))
        assert cli("apply", "--cell", TO, "--json").json()["cells"][0]["action"] == "unchanged"
    finally:
        write_cell(ws.stacks_dir, applied)
    back = cli("apply", "--cell", TO, "--json")  # a step back: never refused, recorded
    assert back.returncode == 0 and back.json()["cells"][0]["action"] == "update", back
    assert cli("cell", "add", TO, "--platform-connections", str(tight), "--write-only").returncode == 3
    assert (ws.stacks_dir / f"Pulumi.cell-{TO}.yaml").read_text() == before


def test_placement_counts_a_refused_raise_at_the_cap_the_cell_was_applied_at(fleet, sandbox):
    """A committed file raising the cap past the room is refused by `apply`; a
    provision (or a move's target slot) must not fill the cell past the cap it
    was applied at meanwhile, through the file's max_pooled_tenants."""
    cli, ws = fleet
    applied = read_cell(ws.stacks_dir, TO)
    room = cli("cell", "show", TO, "--json").json()["connections"]["room"]
    table_name = platform_outputs(sandbox)["registry_table"]

    def set_pooled(n: int) -> None:  # the cell holding n pooled tenants, as its counter says
        aws(sandbox, "dynamodb").update_item(TableName=table_name, Key=counter_key(TO), UpdateExpression="SET #p = :n",
                                             ExpressionAttributeNames={"#p": "pooled"},
                                             ExpressionAttributeValues={":n": {"N": str(n)}})

    set_pooled(applied.max_pooled_tenants)  # full at the cap it was applied at
    try:
        write_cell(ws.stacks_dir, applied.model_copy(update={"max_pooled_tenants": room // 10 + 1}))
        for args in (("--preview",), ()):
            run = cli("provision", "e2-over", "--region", REGION, "--cell", TO, *args, "--json")
            assert run.returncode == 11, run
            assert "connection-budget" in run.json()["error"]["message"], run.json()
        assert ws.registry.get("e2-over") is None and cell_count(sandbox, TO) == applied.max_pooled_tenants
        # The file saying the overcommit is meant: its cap is placed by (the preview finds the slot).
        write_cell(ws.stacks_dir, applied.model_copy(update={"max_pooled_tenants": room // 10 + 1,
                                                             "allow_overcommit": True}))
        assert cli("provision", "e2-over", "--region", REGION, "--cell", TO, "--preview").returncode == 12
    finally:
        write_cell(ws.stacks_dir, applied)
        set_pooled(0)
        cli.stack_file("e2-over").unlink(missing_ok=True)


def test_cell_list_tells_a_cell_add_stopped_half_way_from_one_never_applied(fleet, sandbox):
    cli, ws = fleet
    killed = cli("cell", "add", PART, "--region", REGION, "--max-pooled", "2", env={FAULT_AFTER_ENV: "3"})
    assert killed.returncode == FAULT_EXIT_CODE, killed
    assert cli("cell", "add", PAPER, "--region", REGION, "--write-only").returncode == 0

    def states() -> dict[str, tuple[bool, str]]:
        listed = cli("cell", "list", "--json")
        assert listed.returncode == 0, listed
        return {c["name"]: (c["deployed"], c["applied"]) for c in listed.json()["cells"]}

    assert states()[PART] == (False, "partly") and states()[PAPER] == (False, "never")
    table = cli("cell", "list")
    assert f"partly applied: re-run `tenantctl cell add {PART}`" in table.stdout, table
    assert "partly applied" in cli("cell", "show", PART).stdout

    # The killed run's lease lapses (as 120 s would make it); the re-run finishes the cell.
    table_name = platform_outputs(sandbox)["registry_table"]
    aws(sandbox, "dynamodb").update_item(TableName=table_name, Key=counter_key(PART), UpdateExpression="SET #u = :p",
                                         ExpressionAttributeNames={"#u": LEASE_UNTIL},
                                         ExpressionAttributeValues={":p": {"N": "0"}})
    assert cli("cell", "add", PART).returncode == 0
    assert states()[PART] == (True, "as committed")
    assert cli("cell", "remove", PART, "--yes").returncode == 0
    (ws.stacks_dir / f"Pulumi.cell-{PAPER}.yaml").unlink()
