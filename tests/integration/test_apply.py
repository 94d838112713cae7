"""`tenantctl apply` as CI runs it: subprocesses in a project directory of their
own (its own stacks/, the session's sandbox and registry), the real LocalEngine.

The tests run in file order and build on each other: 20 tenants are created by
the first apply, left alone by the second, one is edited, shards are previewed,
failures are injected, orphans are pruned. What apply did is checked on the
sandbox itself (engine state files, registry records, KMS / SQS / S3 / PostgreSQL),
not only in apply's own summary. Tenant ids start with `ap-` (the session's
other tests use other ids); `ap-keep` is a tenant of another project on the same
registry, which `--match 'ap-t*'` keeps out of this project's prune.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import boto3
import psycopg
import pytest
import yaml
from apply_project import Project

from tenantctl import naming
from tenantctl.engines.local.state import StateFile
from tenantctl.errors import CHANGES_PENDING, NotConfirmed
from tenantctl.fingerprint import applied_hash, program_fingerprint
from tenantctl.models import TenantStatus
from tenantctl.operations.apply import in_shard
from tenantctl.stackconfig import read_tenant, stack_file
from tenantctl.workspace import Workspace

REPO = Path(__file__).resolve().parents[2]
TENANTS = [f"ap-t{i:02d}" for i in range(20)]
MATCH = ("--match", "ap-t*")


def results(summary: dict, prefix: str = "ap-t") -> dict[str, dict]:
    return {r["tenant_id"]: r for r in summary["results"] if r["tenant_id"].startswith(prefix)}


def actions(summary: dict, prefix: str = "ap-t") -> dict[str, str]:
    return {t: r["action"] for t, r in results(summary, prefix).items()}


def state_mtimes(sandbox, tenants) -> dict[str, int]:
    root = Path(sandbox.state_dir) / "local-engine"
    return {t: StateFile(root, t).path.stat().st_mtime_ns for t in tenants}


def records(ws: Workspace) -> dict:
    return {r.tenant_id: r for r in ws.registry.iter_all() if r.tenant_id.startswith("ap-")}


def aws(sandbox, service: str):
    return boto3.client(service, endpoint_url=sandbox.aws_endpoint_url, region_name=sandbox.region)


@pytest.fixture(scope="module")
def proj(sandbox, tmp_path_factory) -> Project:
    return Project.make(tmp_path_factory.mktemp("apply-project"), sandbox)


def test_first_apply_provisions_every_tenant(proj, sandbox):
    for i, tenant in enumerate(TENANTS):
        proj.write(tenant, owner=f"team-{i % 3}")
    platform_state = StateFile(Path(sandbox.state_dir) / "local-engine", "platform")

    md = proj.root / "summary.md"
    rc, summary, err = proj.apply("--parallel", "2", "--markdown", str(md))

    assert rc == 0, err
    mine = results(summary)
    assert sorted(mine) == TENANTS
    assert all(r["action"] == "create" and r["ok"] and r["changes"].get("create") for r in mine.values()), mine
    assert "platform" not in {r["tenant_id"] for r in summary["results"]}
    assert platform_state.exists()
    # Progress for people on stderr: the plan, then one line per tenant.
    assert "plan:" in err and all(f"{t}: create ok" in err for t in TENANTS)
    text = md.read_text()
    assert "all applied" in text and all(f"`{t}`" in text for t in TENANTS)

    # The registry: every tenant active, with the fingerprint of what was applied.
    program_fingerprint.cache_clear()
    recs = records(proj.workspace())
    for tenant in TENANTS:
        rec = recs[tenant]
        assert rec.status is TenantStatus.active and rec.lock is None
        assert rec.spec_hash == applied_hash(read_tenant(stack_file(proj.stacks, tenant)), proj.root)
    # The sandbox: each tenant's key alias, queues and schema; the shared bucket's
    # lifecycle rules are its cell's retention classes, none per tenant.
    aliases = {a["AliasName"] for a in aws(sandbox, "kms").list_aliases()["Aliases"]}
    assert {naming.kms_alias(t) for t in TENANTS} <= aliases
    queues = aws(sandbox, "sqs").list_queues(QueueNamePrefix="tenantctl-ap-t").get("QueueUrls", [])
    assert {u.rsplit("/", 1)[1] for u in queues} >= {naming.queue_name(t) for t in TENANTS}
    store = recs[TENANTS[0]].resources.store
    with psycopg.connect(sandbox.pg_dsn(store.database)) as conn:
        schemas = {row[0] for row in conn.execute("SELECT nspname FROM pg_namespace")}
    assert {naming.schema_name(t) for t in TENANTS} <= schemas
    rules = aws(sandbox, "s3").get_bucket_lifecycle_configuration(Bucket=recs[TENANTS[0]].resources.bucket)["Rules"]
    for tenant in TENANTS:
        assert not any(r["ID"].startswith(f"tenantctl-{tenant}-") for r in rules), tenant


def test_second_apply_applies_nothing(proj, sandbox):
    before_state = state_mtimes(sandbox, TENANTS)
    before_versions = {t: r.version for t, r in records(proj.workspace()).items()}

    rc, summary, err = proj.apply("--parallel", "2")
    assert rc == 0, err
    assert set(actions(summary).values()) == {"unchanged"} and len(actions(summary)) == 20
    assert all(r["changes"] == {} and r["seconds"] == 0 for r in results(summary).values())
    # Nothing reached the engine (no up rewrote a state file) or the registry.
    assert state_mtimes(sandbox, TENANTS) == before_state
    assert {t: r.version for t, r in records(proj.workspace()).items()} == before_versions

    rc, summary, err = proj.apply("--preview")
    assert rc == 0, err
    assert set(actions(summary).values()) == {"unchanged"}
    assert state_mtimes(sandbox, TENANTS) == before_state


def test_editing_one_file_changes_exactly_that_tenant(proj, sandbox):
    edited = "ap-t07"
    path = stack_file(proj.stacks, edited)
    doc = yaml.safe_load(path.read_text())  # a hand edit of the committed file
    doc["config"]["tenantctl:tenant"]["queue"]["delay_seconds"] = 30
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    before_state = state_mtimes(sandbox, TENANTS)
    before_versions = {t: r.version for t, r in records(proj.workspace()).items()}

    md = proj.root / "preview.md"
    rc, summary, err = proj.apply("--preview", "--markdown", str(md))
    assert rc == CHANGES_PENDING, err
    assert {t: a for t, a in actions(summary).items() if a != "unchanged"} == {edited: "update"}
    assert results(summary)[edited]["changes"].get("update", 0) >= 1
    assert "1 tenant(s) with changes pending" in md.read_text() and f"`{edited}`" in md.read_text()
    assert state_mtimes(sandbox, TENANTS) == before_state  # a preview changes nothing

    rc, summary, err = proj.apply("--parallel", "2")
    assert rc == 0, err
    assert {t: a for t, a in actions(summary).items() if a != "unchanged"} == {edited: "update"}
    after_state = state_mtimes(sandbox, TENANTS)
    assert {t for t in TENANTS if after_state[t] != before_state[t]} == {edited}
    after_versions = {t: r.version for t, r in records(proj.workspace()).items()}
    assert {t for t in TENANTS if after_versions[t] != before_versions[t]} == {edited}
    queue_url = records(proj.workspace())[edited].resources.queue_url
    attrs = aws(sandbox, "sqs").get_queue_attributes(QueueUrl=queue_url, AttributeNames=["DelaySeconds"])
    assert attrs["Attributes"]["DelaySeconds"] == "30"

    rc, summary, err = proj.apply("--preview")
    assert rc == 0, err


def test_shards_are_disjoint_and_cover_all(proj):
    proj.write("ap-t20")  # new: pending in exactly one shard
    rc, whole, err = proj.apply("--preview")
    assert rc == CHANGES_PENDING, err
    everyone = {r["tenant_id"] for r in whole["results"]}
    assert set(TENANTS) | {"ap-t20"} <= everyone

    seen: list[set[str]] = []
    codes = {}
    for index in (1, 2, 3):
        rc, summary, err = proj.apply("--preview", "--shard", f"{index}/3")
        ids = {r["tenant_id"] for r in summary["results"]}
        assert all(in_shard(t, index, 3) for t in ids)
        assert summary["shard"] == f"{index}/3"
        seen.append(ids)
        codes[index] = rc
    assert sum(len(s) for s in seen) == len(set().union(*seen))  # disjoint
    assert set().union(*seen) == everyone  # cover all
    owner = next(i for i in (1, 2, 3) if "ap-t20" in seen[i - 1])
    assert codes[owner] == CHANGES_PENDING and all(codes[i] == 0 for i in (1, 2, 3) if i != owner)

    bad = proj.cli("apply", "--preview", "--shard", "4/3")
    assert bad.returncode == 2 and "Invalid value for '--shard'" in bad.stderr  # a usage error


def test_one_failed_tenant_does_not_stop_the_others(proj, sandbox):
    # ap-t20 is new (from the shard test); ap-t03 gets a new owner; ap-tbadspec's file
    # is refused (delay over SQS's 900 s); ap-t05 asks for a tier move, which the
    # registry would refuse: the plan says so before any worker runs.
    proj.write("ap-t03", owner="team-x")
    bad_spec = stack_file(proj.stacks, "ap-tbadspec")
    doc = yaml.safe_load(stack_file(proj.stacks, "ap-t00").read_text())
    doc["config"]["tenantctl:tenant"].update(id="ap-tbadspec", queue={"delay_seconds": 5000})
    bad_spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    pooled_t05 = stack_file(proj.stacks, "ap-t05").read_text()
    proj.write("ap-t05", tier="dedicated")

    rc, summary, err = proj.apply("--preview")
    assert rc == 1, err  # a stack file that can't be read is an error, even in a preview
    assert results(summary)["ap-tbadspec"]["action"] == "invalid"

    md = proj.root / "failed.md"
    rc, summary, err = proj.apply("--parallel", "2", "--markdown", str(md))
    assert rc == 1, err
    res = results(summary)
    assert res["ap-t20"]["action"] == "create" and res["ap-t20"]["ok"]
    assert res["ap-t03"]["action"] == "update" and res["ap-t03"]["ok"]
    assert res["ap-tbadspec"]["action"] == "invalid" and not res["ap-tbadspec"]["ok"]
    assert "delay_seconds" in res["ap-tbadspec"]["error"]
    assert res["ap-t05"]["action"] == "invalid" and not res["ap-t05"]["ok"]
    assert "tenantctl move ap-t05" in res["ap-t05"]["error"]
    assert {t for t, r in res.items() if not r["ok"]} == {"ap-tbadspec", "ap-t05"}
    text = md.read_text()
    assert "**2 failed**" in text and "`ap-tbadspec`" in text and "`ap-t05`" in text
    recs = records(proj.workspace())
    assert recs["ap-t20"].status is TenantStatus.active and recs["ap-t03"].owner == "team-x"
    assert recs["ap-t05"].tier.value == "pooled" and recs["ap-t05"].lock is None
    assert "ap-tbadspec" not in recs

    # Fixing the files converges: the failed tenant was left as it was.
    bad_spec.unlink()
    stack_file(proj.stacks, "ap-t05").write_text(pooled_t05)
    rc, summary, err = proj.apply()
    assert rc == 0, err
    assert set(actions(summary).values()) == {"unchanged"}


def test_a_tenant_whose_provision_failed_is_applied_again_until_it_passes(proj, sandbox):
    """A provision records the tenant active with its fingerprint, then its
    posture check fails: every apply runs it again (exit 1) until one passes,
    and the next one skips it again."""
    from tenantctl.errors import PolicyViolation
    from tenantctl.operations.provision import provision

    tenant, ws = "ap-t02", proj.workspace()
    spec = read_tenant(stack_file(proj.stacks, tenant))
    kms, key = aws(sandbox, "kms"), records(ws)[tenant].resources.kms_key_arn
    kms.disable_key_rotation(KeyId=key)  # behind tenantctl's back; a run that trusts its state keeps it off
    try:
        with pytest.raises(PolicyViolation):
            provision(ws, spec, refresh=False)
        failed = records(ws)[tenant]
        assert failed.status is TenantStatus.active and failed.provision_failed and "kms-rotation" in failed.last_error
        assert failed.spec_hash == applied_hash(spec, proj.root)  # the fingerprint alone would skip it

        for _ in range(2):  # red stays red
            rc, summary, err = proj.apply(*MATCH)
            assert rc == 1, err
            assert {t: a for t, a in actions(summary).items() if a != "unchanged"} == {tenant: "update"}
            res = results(summary)[tenant]
            assert not res["ok"] and "kms-rotation" in res["error"], res
            assert res["reason"].startswith("the last provision failed (last error: ")
        rc, summary, err = proj.apply("--preview", *MATCH)
        assert rc == CHANGES_PENDING and actions(summary)[tenant] == "update", err
    finally:
        kms.enable_key_rotation(KeyId=key)

    rc, summary, err = proj.apply(*MATCH)
    assert rc == 0 and actions(summary)[tenant] == "update" and results(summary)[tenant]["ok"], err
    passed = records(ws)[tenant]
    assert passed.last_error is None and not passed.provision_failed
    before = state_mtimes(sandbox, [tenant])
    rc, summary, err = proj.apply(*MATCH)
    assert rc == 0 and set(actions(summary).values()) == {"unchanged"}, err
    assert state_mtimes(sandbox, [tenant]) == before and records(ws)[tenant].version == passed.version


def test_a_stack_file_saying_more_than_its_spec_is_invalid(proj, sandbox):
    """The region the AWS provider is given, or a config key the program would
    read besides the spec, is not a no-change: apply and both previews refuse
    the file, naming why, and run nothing for it."""
    region, bogus = stack_file(proj.stacks, "ap-t04"), stack_file(proj.stacks, "ap-t06")
    committed = {path: path.read_text() for path in (region, bogus)}
    region.write_text(committed[region].replace(f"aws:region: {sandbox.region}", "aws:region: eu-west-1"))
    bogus.write_text(committed[bogus].replace("config:\n", "config:\n  tenantctl:bogus: 1\n"))
    before = state_mtimes(sandbox, TENANTS)
    try:
        for args in (("--preview",), ()):
            rc, summary, err = proj.apply(*args, *MATCH)
            assert rc == 1, err
            res = results(summary)
            assert {t: a for t, a in actions(summary).items() if a != "unchanged"} == {
                "ap-t04": "invalid", "ap-t06": "invalid"}
            assert f"aws:region 'eu-west-1' is not the tenant's region '{sandbox.region}'" in res["ap-t04"]["error"]
            assert "config key(s) `tenantctl:bogus`" in res["ap-t06"]["error"]
        preview = proj.cli("provision", "ap-t04", "--preview")
        assert preview.returncode == 3 and "aws:region 'eu-west-1'" in preview.stderr, preview.stderr
        assert state_mtimes(sandbox, TENANTS) == before
    finally:
        for path, text in committed.items():
            path.write_text(text)
    rc, summary, err = proj.apply(*MATCH)
    assert rc == 0 and set(actions(summary).values()) == {"unchanged"}, err


def test_a_key_generation_file_no_move_opened_is_refused_and_audited(proj):
    """`<id>.k<N>` is a move's target stack (`tenantctl move`): of an unknown
    tenant, or of one not moving there, apply refuses it by name (no create of a
    stack it cannot find) and audit reports it."""
    zeta, stray = stack_file(proj.stacks, "ap-tzeta.k1"), stack_file(proj.stacks, "ap-t01.k1")
    zeta.write_text(stack_file(proj.stacks, "ap-t00").read_text().replace("ap-t00", "ap-tzeta"))
    stray.write_text(stack_file(proj.stacks, "ap-t01").read_text())
    try:
        rc, summary, err = proj.apply("--preview", *MATCH)
        assert rc == 1, err
        res = results(summary)
        assert {t: a for t, a in actions(summary).items() if a != "unchanged"} == {
            "ap-tzeta.k1": "invalid", "ap-t01.k1": "invalid"}  # no `ap-tzeta` create, ap-t01 itself unchanged
        assert "tenant 'ap-tzeta' is not in the registry" in res["ap-tzeta.k1"]["error"]
        assert "tenant 'ap-t01' has no open move to it" in res["ap-t01.k1"]["error"]
        assert all("written by `tenantctl move`" in res[t]["error"] for t in ("ap-tzeta.k1", "ap-t01.k1"))

        run = proj.cli("audit", "--json")
        assert run.returncode == CHANGES_PENDING, run.stderr
        found = {(f["kind"], f["tenant_id"], f["subject"]) for f in json.loads(run.stdout)["findings"]
                 if f["tenant_id"].startswith("ap-t")}
        assert found == {("stray-stack-file", "ap-tzeta", zeta.name), ("stray-stack-file", "ap-t01", stray.name)}
    finally:
        zeta.unlink()
        stray.unlink()


def test_a_retiring_store_without_an_open_move_is_refused_before_anything_is_created(proj, sandbox):
    """`retiring:` is what `tenantctl move` writes while a move is open. A file
    copied from a tenant in the middle of a move (how a new tenant is often
    added), or one of a settled tenant carrying it, would build a second store
    beside one that never existed: apply, both previews and provision refuse it
    (exit 3 for provision), creating nothing, no record, no state."""
    template = stack_file(proj.stacks, "ap-t00").read_text()
    copied = stack_file(proj.stacks, "q7-retire")
    retiring = "    store_generation: 1\n    retiring:\n      tier: pooled\n      generation: 0\n"
    copied.write_text(template.replace("ap-t00", "q7-retire").replace("    store_generation: 0\n", retiring))
    settled = stack_file(proj.stacks, "ap-t02")
    committed = settled.read_text()
    settled.write_text(committed.replace("    store_generation: 0\n", retiring))
    before = state_mtimes(sandbox, TENANTS)
    try:
        for args in (("--preview",), ()):
            rc, summary, err = proj.apply(*args, "--match", "q7-retire", "--match", "ap-t02")
            assert rc == 1, err
            res = {r["tenant_id"]: r for r in summary["results"]}
            assert {t: r["action"] for t, r in res.items()} == {"q7-retire": "invalid", "ap-t02": "invalid"}
            assert all("retiring" in r["error"] and "no open move" in r["error"] for r in res.values()), res
        for args in (("--preview",), ()):
            run = proj.cli("provision", "q7-retire", *args)
            assert run.returncode == 3, run.stderr
            assert run.stderr.strip().splitlines()[-1].startswith("error: tenant 'q7-retire'"), run.stderr
        assert proj.workspace().registry.get("q7-retire") is None
        assert not (Path(sandbox.state_dir) / "local-engine" / "q7-retire.json").exists()
        assert state_mtimes(sandbox, TENANTS) == before
    finally:
        copied.unlink()
        settled.write_text(committed)


def test_a_failed_live_read_is_reported_as_failed(proj, sandbox):
    """`apply --refresh` of a tenant whose live read fails: still `unchanged`,
    but a failed row with its error in the table, the progress and the
    comment, never one of the skipped."""
    tenant = "ap-t08"
    state = StateFile(Path(sandbox.state_dir) / "local-engine", tenant).path
    kept = state.read_bytes()
    state.write_text("{not json")
    md = proj.root / "refresh.md"
    try:
        run = proj.cli("apply", "--refresh", "--match", tenant, "--markdown", str(md))
    finally:
        state.write_bytes(kept)
    assert run.returncode == 1, run.stderr
    row = next(line for line in run.stdout.splitlines() if line.startswith(tenant))
    assert row.split()[:5] == [tenant, "unchanged", "failed:", "refresh", "failed:"], run.stdout
    assert f"{tenant}: unchanged failed: refresh failed:" in run.stderr
    assert run.stdout.rstrip().endswith("1 unchanged; 1 failed")
    text = md.read_text()
    assert ":x: **1 failed**" in text and f"| `{tenant}` | unchanged | **failed**: refresh failed: " in text
    assert "skipped" not in text
    rc, summary, err = proj.apply("--refresh", "--match", tenant)
    assert rc == 0 and actions(summary) == {tenant: "unchanged"}, err


def test_prune_is_refused_without_yes_and_deprovisions_with_it(proj, sandbox, tmp_path):
    # A tenant of another project on the same registry: an orphan to this one
    # unless --match scopes apply to this project's tenants.
    other = Project(tmp_path / "other", sandbox)
    other.root.mkdir()
    shutil.copy(REPO / "Pulumi.yaml", other.root / "Pulumi.yaml")
    kept = other.cli("provision", "ap-keep", "--json")
    assert kept.returncode == 0, kept.stderr

    gone = ["ap-t18", "ap-t19"]
    for tenant in gone:
        stack_file(proj.stacks, tenant).unlink()
    rc, summary, err = proj.apply("--preview")
    assert rc == 0, err  # orphans are reported, not pending
    assert {t for t, a in actions(summary, "ap-").items() if a == "orphan"} == {*gone, "ap-keep"}

    nothing = proj.cli("apply", "--prune", "--yes", "--match", "ap-x*")  # a scope with no stack file
    assert nothing.returncode == 3 and "no tenant stack file matching ap-x*" in nothing.stderr, nothing.stderr
    assert "every tenant of the registry matching ap-x*" in nothing.stderr

    refused = proj.cli("apply", "--prune", "--json", *MATCH)  # no terminal to ask on, no --yes
    assert refused.returncode == NotConfirmed.exit_code, refused.stderr
    error = json.loads(refused.stdout)["error"]
    assert "pass --yes" in error["message"] and sorted(error["details"]) == sorted(gone)
    assert "applying" not in refused.stderr, refused.stderr  # refused before anything runs, and it says no more
    recs = records(proj.workspace())
    assert all(recs[t].status is TenantStatus.active for t in gone)

    rc, summary, err = proj.apply("--preview", "--prune", *MATCH)
    assert rc == CHANGES_PENDING, err
    assert {t for t, a in actions(summary, "ap-").items() if a == "prune"} == set(gone)

    keys = {t: recs[t].resources.kms_key_arn for t in gone}
    rc, summary, err = proj.apply("--prune", "--yes", *MATCH)
    assert rc == 0, err
    res = results(summary, "ap-")
    assert {t for t, r in res.items() if r["action"] == "prune" and r["ok"]} == set(gone)
    assert "ap-keep" not in res
    recs = records(proj.workspace())
    assert all(recs[t].status is TenantStatus.deprovisioned for t in gone)
    assert recs["ap-keep"].status is TenantStatus.active and recs["ap-t00"].status is TenantStatus.active
    kms = aws(sandbox, "kms")
    assert all(kms.describe_key(KeyId=keys[t])["KeyMetadata"]["KeyState"] == "PendingDeletion" for t in gone)
    queues = aws(sandbox, "sqs").list_queues(QueueNamePrefix="tenantctl-ap-t1").get("QueueUrls", [])
    assert not {naming.queue_name(t) for t in gone} & {u.rsplit("/", 1)[1] for u in queues}

    rc, summary, err = proj.apply(*MATCH)
    assert rc == 0, err
    assert set(actions(summary).values()) == {"unchanged"} and len(actions(summary)) == 19
