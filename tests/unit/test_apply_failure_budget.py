"""`apply --max-failures N`: once more than N cells and tenants have failed, no
further one starts; the running ones finish and are reported, the rest are
reported not started (the run fails, they are no failures of their own).

The pool's workers run in spawned processes: each leaves a marker file named
for its tenant in the directory passed as the project, so a test sees which
tenants were started, not only which were reported."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from tenantctl.engines.base import ChangeSet
from tenantctl.errors import ApplyFailed, UsageError
from tenantctl.models import CellSpec, TenantSpec
from tenantctl.operations import apply as apply_op
from tenantctl.operations.apply import run_pool
from tenantctl.operations.apply_cells import apply_cells
from tenantctl.operations.apply_guard import FailureBudget
from tenantctl.operations.apply_results import Action, ApplySummary, CellResult, TenantResult
from tenantctl.stackconfig import write_cell, write_tenant


def marking_worker(project_dir, cwd, yes, tenant_id, action, preview, record):
    """Runs in a spawned process (module-level, so it pickles by reference):
    marks its tenant started; `bad*` fail, `crash` kills its process. With a
    gate directory (``cwd``), a tenant that succeeds returns only once the
    parent has been told of a failure (``released`` there): it cannot finish,
    and free its worker for the next tenant, before the budget is spent."""
    (Path(project_dir) / tenant_id).touch()
    if tenant_id == "crash":
        os._exit(3)
    ok = not tenant_id.startswith("bad")
    if ok and cwd != ".":
        deadline = time.monotonic() + 60
        while not (Path(cwd) / "released").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
    return TenantResult(tenant_id=tenant_id, action=Action(action), ok=ok, error=None if ok else "policy gate")


def started(markers: Path) -> set[str]:
    return {p.name for p in markers.iterdir()}


def pool(markers: Path, ids: list[str], parallel: int, limit: int | None,
         gate: Path | None = None) -> tuple[list[TenantResult], list[str]]:
    """run_pool over ``ids`` -> (what it reported, the ids it returned as never started).
    ``gate``: succeeding tenants wait there until a failure was reported (``marking_worker``)."""
    got: list[TenantResult] = []

    def report(result: TenantResult) -> None:
        got.append(result)
        if gate is not None and not result.ok:
            (gate / "released").touch()

    never = run_pool([TenantResult(tenant_id=t, action=Action.update) for t in ids],
                     (str(markers), str(gate) if gate is not None else ".", False),
                     False, parallel, report, {}, worker=marking_worker, budget=FailureBudget(limit))
    return got, [r.tenant_id for r in never]


def test_the_pool_starts_no_tenant_once_more_than_max_failures_failed(tmp_path):
    # Two at a time: `bad` and `a` start together; once `bad` failed nothing more starts, `a` finishes
    # (held until then: finishing first, it would free its worker for `b` before the failure is known).
    markers, gate = tmp_path / "markers", tmp_path / "gate"
    markers.mkdir(), gate.mkdir()
    got, never = pool(markers, ["bad", "a", "b", "c", "d"], parallel=2, limit=0, gate=gate)
    assert started(markers) == {"bad", "a"}
    assert {r.tenant_id: r.ok for r in got} == {"bad": False, "a": True}
    assert never == ["b", "c", "d"]


def test_the_pool_without_a_limit_starts_every_tenant(tmp_path):
    ids = ["bad1", "a", "bad2", "b", "bad3"]
    got, never = pool(tmp_path, ids, parallel=2, limit=None)
    assert started(tmp_path) == set(ids) and never == [] and len(got) == len(ids)


def test_a_dead_worker_counts_as_a_failure_and_still_ends_in_its_own_process(tmp_path):
    # The crash breaks the pool; re-run alone it dies again and is reported failed:
    # that failure spends the budget, and the tenants after it never start.
    got, never = pool(tmp_path, ["crash", "a", "b"], parallel=1, limit=0)
    assert [(r.tenant_id, r.ok) for r in got] == [("crash", False)] and "worker process died" in got[0].error
    # The lock it left names a pid gone from this host: a re-run takes it over, no `unlock --force`.
    assert "--force" not in got[0].error and "re-run" in got[0].error
    assert started(tmp_path) == {"crash"} and never == ["a", "b"]


# -- apply itself: the in-process loop (--parallel 1) and the cells --

@pytest.fixture
def ws(tmp_path, monkeypatch):
    """A project of tenants `a-bad`, `b-bad`, `c`, `d` (none in the registry yet),
    whose provision fails for the `-bad` ones; ``ws.provisioned``: in order."""
    from tenantctl.operations import provision as provision_op

    stacks = tmp_path / "stacks"
    stacks.mkdir()
    write_cell(stacks, CellSpec())
    for t in ("a-bad", "b-bad", "c", "d"):
        write_tenant(stacks, TenantSpec(id=t))
    ws = SimpleNamespace(project_dir=tmp_path, stacks_dir=stacks, cwd=tmp_path, ensure_platform=dict,
                         committed_cells=lambda only=None: {}, registry=SimpleNamespace(fleet=lambda: ([], [])),
                         provisioned=[])

    def provision(ws_, spec, refresh=None):
        ws.provisioned.append(spec.id)
        if spec.id.endswith("-bad"):
            raise ApplyFailed(f"policy gate refused {spec.id}")
        return None, SimpleNamespace(changes=ChangeSet(stack=spec.id, changes=[]), drift=[], orphans=[])

    monkeypatch.setattr(provision_op, "provision", provision)
    return ws


def outcomes(summary: ApplySummary) -> dict[str, str]:
    return {r.name: r.outcome for r in summary.stacks}


def test_one_at_a_time_apply_stops_after_the_failure_past_the_limit(ws):
    stops: list[str] = []
    summary = apply_op.apply(ws, parallel=1, max_failures=0, on_stop=stops.append)
    assert ws.provisioned == ["a-bad"]
    assert outcomes(summary) == {"a-bad": "failed: policy gate refused a-bad", "b-bad": "not started",
                                 "c": "not started", "d": "not started"}
    assert [r.name for r in summary.failed] == ["a-bad"]  # not started: no failures of their own
    assert summary.stopped == "1 failed, more than --max-failures 0" and stops == [summary.stopped]
    assert summary.exit_code() == 1
    held = summary.results[1]
    assert not held.ok and held.not_started and held.error == "not started: 1 failed, more than --max-failures 0"

    ws.provisioned.clear()
    summary = apply_op.apply(ws, parallel=1, max_failures=1)
    assert ws.provisioned == ["a-bad", "b-bad"] and summary.stopped == "2 failed, more than --max-failures 1"
    assert [r.name for r in summary.not_started] == ["c", "d"]


def test_without_a_limit_or_within_it_every_tenant_runs(ws):
    for limit in (None, 2):
        ws.provisioned.clear()
        summary = apply_op.apply(ws, parallel=1, max_failures=limit)
        assert ws.provisioned == ["a-bad", "b-bad", "c", "d"]
        assert summary.not_started == [] and summary.stopped is None and len(summary.failed) == 2


def test_a_failed_cell_counts_and_then_no_other_cell_nor_tenant_starts(ws, monkeypatch):
    """Cells are applied before any tenant, and a broken program usually fails
    there first: a failed cell up is spent from the budget like a tenant."""
    ups: list[str] = []

    def up_cell(cell, **kw):
        ups.append(cell)
        raise ApplyFailed(f"up of cell {cell} failed")

    def planned(ws_, cells):
        results = [CellResult(cell=name, action=Action.update, reason="program changed") for name in cells]
        for r in results:
            r._up = True
        return results

    ws.committed_cells = lambda only=None: {"default": CellSpec(), "eu1": CellSpec(name="eu1")}
    ws.up_cell = up_cell
    monkeypatch.setattr(apply_op, "plan_cells", planned)
    summary = apply_op.apply(ws, parallel=1, max_failures=0)
    assert ups == ["default"] and ws.provisioned == []
    assert outcomes(summary) == {"cell default": "failed: up of cell default failed", "cell eu1": "not started",
                                 "a-bad": "not started", "b-bad": "not started", "c": "not started",
                                 "d": "not started"}


def test_apply_cells_alone_holds_the_cells_after_the_limit():
    ups: list[str] = []

    def up_cell(cell, **kw):
        ups.append(cell)
        raise ApplyFailed("boom")

    cells = {"a": CellSpec(name="a"), "b": CellSpec(name="b"), "c": CellSpec(name="c")}
    planned = [CellResult(cell=c, action=Action.update) for c in cells]
    for r in planned:
        r._up = True
    apply_cells(SimpleNamespace(up_cell=up_cell), cells, planned, budget=FailureBudget(1))
    assert ups == ["a", "b"] and [r.outcome for r in planned] == ["failed: boom", "failed: boom", "not started"]


def test_a_preview_refuses_max_failures_and_the_limit_is_never_negative(ws, tmp_path):
    with pytest.raises(UsageError, match="'--max-failures' cannot be used with '--preview'") as refused:
        apply_op.apply(ws, preview=True, max_failures=0)
    assert refused.value.exit_code == 2 and ws.provisioned == []
    with pytest.raises(UsageError, match="x>=0"):
        FailureBudget(-1)
    run = subprocess.run([sys.executable, "-m", "tenantctl", "apply", "--preview", "--max-failures", "3"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path,
                         env={**os.environ, "TENANTCTL_SANDBOX_DIR": str(tmp_path / "none")})
    assert run.returncode == 2 and "cannot be used with '--preview'" in run.stderr, run


def test_not_started_stacks_have_their_own_state_in_the_table_the_comment_and_json(monkeypatch, capsys, tmp_path):
    import json

    import typer

    import tenantctl.workspace
    from tenantctl.cli import apply_cmd

    failed = TenantResult(tenant_id="acme", action=Action.update, ok=False, error="policy gate", reason="changed")
    held = FailureBudget(0)
    held.count(failed)
    waiting = held.hold(TenantResult(tenant_id="globex", action=Action.update, reason="changed"))
    done = ApplySummary(preview=False, shard="1/1", seconds=1.0, max_failures=0, stopped=held.why(),
                        results=[failed, waiting])

    def run(ws, on_plan=None, on_stop=None, **options):
        assert options["max_failures"] == 0
        on_plan([], [failed, waiting])
        on_stop(held.why())
        return done

    monkeypatch.setattr(apply_op, "apply", run)
    monkeypatch.setattr(tenantctl.workspace, "Workspace", lambda: None)
    md = tmp_path / "summary.md"
    with pytest.raises(typer.Exit) as exited:
        apply_cmd.apply(max_failures=0, markdown=md)
    assert exited.value.exit_code == 1
    out, err = capsys.readouterr()
    assert "stopping: 1 failed, more than --max-failures 0: no further stack is started" in err
    rows = [" ".join(line.split()) for line in out.splitlines()[2:4]]
    assert rows == ["acme update failed: policy gate changed", "globex update not started changed"]
    assert out.rstrip().endswith("2 update; 1 failed; 1 not started (1 failed, more than --max-failures 0)")
    text = md.read_text()
    assert ":x: **1 failed** · **1 not started** (1 failed, more than --max-failures 0)" in text
    assert "| `globex` | update | **not started** | changed |  |" in text

    with pytest.raises(typer.Exit):
        apply_cmd.apply(max_failures=0, json_out=True)
    dumped = json.loads(capsys.readouterr().out)
    assert dumped["not_started"] == 1 and dumped["exit_code"] == 1 and dumped["max_failures"] == 0
    assert dumped["stopped"] == "1 failed, more than --max-failures 0"
    assert [(r["tenant_id"], r["ok"], r["not_started"]) for r in dumped["results"]] == [
        ("acme", False, False), ("globex", False, True)]


def test_a_summary_of_not_started_stacks_alone_still_fails():
    waiting = TenantResult(tenant_id="a", action=Action.update, ok=False, not_started=True, error="not started")
    summary = ApplySummary(preview=False, shard="1/1", seconds=1.0, results=[waiting])
    assert summary.failed == [] and summary.exit_code() == 1
