"""`tenantctl apply --max-failures N` on the sandbox, through the real CLI: a
rollout whose tenants fail for a real reason (the policy gate refusing a backup
retention under 7 days, at apply time: the plan lets the file through) stops
starting tenants once more than N failed, and the tenants it never started are
left exactly as they were (registry record, engine state). Tenant ids start
with `mf-`; `--match 'mf-*'` keeps the session's other tenants out."""

from __future__ import annotations

from pathlib import Path

import pytest
from apply_project import Project

from tenantctl.engines.local.state import StateFile

MATCH = ("--match", "mf-*")
TENANTS = ["mf-a", "mf-b", "mf-c"]


@pytest.fixture(scope="module")
def proj(sandbox, tmp_path_factory) -> Project:
    return Project.make(tmp_path_factory.mktemp("max-failures-project"), sandbox)


def records(proj: Project) -> dict:
    return {r.tenant_id: r for r in proj.workspace().registry.iter_all() if r.tenant_id in TENANTS}


def state_mtime(sandbox, tenant: str) -> int:
    return StateFile(Path(sandbox.state_dir) / "local-engine", tenant).path.stat().st_mtime_ns


def test_a_rollout_stops_starting_tenants_once_more_than_max_failures_failed(proj, sandbox):
    for tenant in TENANTS:
        proj.write(tenant, owner="team-mf")
    rc, summary, err = proj.apply("--parallel", "1", *MATCH)
    assert rc == 0, err

    # The rollout: mf-a and mf-b get a spec the policy gate refuses when their
    # update runs; mf-c a harmless change. One at a time, in id order.
    for tenant in ("mf-a", "mf-b"):
        proj.write(tenant, owner="team-mf", backup={"retention_days": 3})
    proj.write("mf-c", owner="team-mf2")
    before = records(proj)
    mtimes = {t: state_mtime(sandbox, t) for t in ("mf-b", "mf-c")}

    md = proj.root / "summary.md"
    rc, summary, err = proj.apply("--parallel", "1", "--max-failures", "0", "--markdown", str(md), *MATCH)
    assert rc == 1, err
    res = {r["tenant_id"]: r for r in summary["results"]}
    assert res["mf-a"]["action"] == "update" and not res["mf-a"]["ok"] and not res["mf-a"]["not_started"]
    assert "backup-retention" in res["mf-a"]["error"], res["mf-a"]
    for tenant in ("mf-b", "mf-c"):
        assert res[tenant]["action"] == "update" and res[tenant]["not_started"] and not res[tenant]["ok"], res
        assert res[tenant]["error"] == "not started: 1 failed, more than --max-failures 0"
    assert summary["not_started"] == 2 and summary["stopped"] == "1 failed, more than --max-failures 0"
    assert "mf-a: update failed" in err and "stopping: 1 failed, more than --max-failures 0" in err
    assert "mf-b: update" not in err and "mf-c: update" not in err  # never started, so never finished
    text = md.read_text()
    assert ":x: **1 failed** · **2 not started**" in text and "| `mf-c` | update | **not started** |" in text

    # What was never started is untouched: the record (version, owner, no lock, no
    # failure noted) and the engine state.
    after = records(proj)
    for tenant in ("mf-b", "mf-c"):
        assert after[tenant].version == before[tenant].version and after[tenant].lock is None
        assert after[tenant].last_error is None and not after[tenant].provision_failed
        assert state_mtime(sandbox, tenant) == mtimes[tenant]
    assert after["mf-c"].owner == "team-mf"
    assert after["mf-a"].status.value == "active"  # refused by the gate: the tenant kept as it was

    # The program fixed (here: the specs), the same command rolls everything out.
    for tenant in ("mf-a", "mf-b"):
        proj.write(tenant, owner="team-mf")
    rc, summary, err = proj.apply("--parallel", "1", "--max-failures", "0", *MATCH)
    assert rc == 0 and summary["not_started"] == 0, err
    assert records(proj)["mf-c"].owner == "team-mf2"
