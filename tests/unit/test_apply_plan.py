"""`apply` planning: shards, exit codes and the pull-request summary (no engine needed)."""

import pytest

from tenantctl.errors import InvalidInput
from tenantctl.operations.apply import Action, ApplySummary, TenantResult, in_shard, parse_shard
from tenantctl.templates import render

IDS = [f"tenant-{i:03d}" for i in range(200)]


@pytest.mark.parametrize("total", [1, 2, 3, 4, 7])
def test_shards_are_disjoint_cover_all_and_deterministic(total):
    owners = {t: [i for i in range(1, total + 1) if in_shard(t, i, total)] for t in IDS}
    assert all(len(v) == 1 for v in owners.values())
    again = {t: [i for i in range(1, total + 1) if in_shard(t, i, total)] for t in IDS}
    assert owners == again
    if total > 1:  # a hash split, not everything on one runner
        assert len({v[0] for v in owners.values()}) == total


@pytest.mark.parametrize("text", ["0/4", "5/4", "a/b", "1", "1/0"])
def test_bad_shard_is_refused(text):
    with pytest.raises(InvalidInput, match="--shard"):
        parse_shard(text)


def summary(preview, *results):
    return ApplySummary(preview=preview, shard="1/1", seconds=1.0, results=list(results))


def test_exit_codes():
    same = TenantResult(tenant_id="a", action=Action.unchanged)
    new = TenantResult(tenant_id="b", action=Action.create)
    bad = TenantResult(tenant_id="c", action=Action.update, ok=False, error="boom")
    assert summary(True, same).exit_code() == 0
    assert summary(True, same, new).exit_code() == 2
    assert summary(True, same, new, bad).exit_code() == 1
    assert summary(False, same, new).exit_code() == 0
    assert summary(False, new, bad).exit_code() == 1


def test_markdown_summary_names_failures_and_orphans():
    text = render("apply_summary.md.j2", summary=summary(
        False,
        TenantResult(tenant_id="acme", action=Action.create, changes={"create": 12}),
        TenantResult(tenant_id="beta", action=Action.update, ok=False, error="KMS | throttled"),
        TenantResult(tenant_id="gamma", action=Action.unchanged),
        TenantResult(tenant_id="old", action=Action.orphan),
    ))
    assert "**1 failed**" in text
    assert "| `acme` | create | ok | create 12 |" in text
    assert "KMS \\| throttled" in text
    assert "1 unchanged tenant(s) skipped" in text
    assert "`old`" in text and "--prune --yes" in text
