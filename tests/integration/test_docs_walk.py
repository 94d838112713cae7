"""What the README promises a new platform engineer, run as written through
the real CLI on the session's sandbox: a preview answers as its run would,
and a long command's progress is stamped lines on stderr."""

from __future__ import annotations

import json
import re

import pytest
from fault_tools import Cli, registry_record

STAMPED = re.compile(r"^\[\s*\d+\.\d+s\] ")


@pytest.fixture(scope="module")
def cli(sandbox, tmp_path_factory) -> Cli:
    return Cli.create(sandbox, tmp_path_factory.mktemp("docs-walk"))


def test_provision_preview_in_a_committed_cell_the_sandbox_has_not_applied_is_pending(cli, sandbox):
    # `cell add --write-only` writes the file a pull request commits; on the sandbox `provision`
    # applies such a cell before placing the tenant there, so its preview must not fail (it exited 4).
    added = cli("cell", "add", "qd-west", "--region", "us-west-2", "--write-only", "--json")
    assert added.returncode == 0, added
    assert "applying" not in added.stderr and "writing cell qd-west's stack file: done" in added.stderr, added
    try:
        for extra in ([], ["--json"]):
            run = cli("provision", "qd-pre", "--region", "us-west-2", "--cell", "qd-west", "--preview", *extra)
            assert run.returncode == 12, run
            if extra:
                shown = json.loads(run.stdout)
                assert shown["cell"] == "qd-west" and shown["cell_created_first"] is True
                assert shown["resources"] == [] and shown["exit_code"] == 12
            else:
                assert "its cell qd-west is not applied yet and is created first" in run.stdout, run
        # A preview writes nothing: no stack file, no record, the cell still not applied.
        assert not cli.stack_file("qd-pre").exists()
        assert registry_record(sandbox, "qd-pre") is None
        shown = cli("cell", "show", "qd-west", "--json")
        assert shown.returncode == 0 and json.loads(shown.stdout)["deployed"] is False, shown
    finally:
        (cli.root / "stacks" / "Pulumi.cell-qd-west.yaml").unlink()


def test_move_progress_is_stamped_lines_on_stderr_with_or_without_json(cli):
    made = cli("provision", "qd-mv", "--json")
    assert made.returncode == 0, made
    moved = cli("move", "qd-mv", "--tier", "dedicated")
    assert moved.returncode == 0, moved
    lines = moved.stderr.splitlines()
    assert any("move qd-mv: freezing" in line for line in lines), moved.stderr
    assert lines and all(STAMPED.match(line) for line in lines), moved.stderr
    # The window's end as `status` writes it, not an ISO string with microseconds.
    assert re.search(r"rollback window until \d{4}-\d\d-\d\d \d\d:\d\dZ \(", moved.stdout), moved.stdout

    back = cli("move", "qd-mv", "--rollback")
    assert back.returncode == 0, back
    # Where the tenant is now, not the direction of the move it undid.
    assert back.stdout.strip() == "tenant qd-mv: rolled back to pooled (its move to dedicated undone)", back
    lines = back.stderr.splitlines()
    assert lines and all(STAMPED.match(line) and "move qd-mv: " in line for line in lines), back.stderr
    assert any(line.endswith("move qd-mv: rolling back") for line in lines), back.stderr  # words, not the enum

    gone = cli("deprovision", "qd-mv", "--yes", "--no-final-backup")
    assert gone.returncode == 0, gone


def test_provision_of_a_tombstone_is_a_conflict_whatever_region_it_names(cli):
    # The README: provision of a tombstone is a conflict (5), as its preview said; the run
    # answered 3 ("its region never changes in place ... tenantctl move") when the spec's
    # region (the default one, say) was not the tombstone's.
    made = cli("provision", "qd-tomb", "--json")
    assert made.returncode == 0, made
    gone = cli("deprovision", "qd-tomb", "--yes", "--no-final-backup")
    assert gone.returncode == 0, gone
    for extra in (["--preview"], []):
        again = cli("provision", "qd-tomb", "--region", "eu-west-1", *extra, "--json")
        assert again.returncode == 5, again
        assert "tombstoned" in json.loads(again.stdout)["error"]["message"]
    assert not cli.stack_file("qd-tomb").exists()


def test_a_restore_after_deprovision_into_a_draining_cell_is_refused_not_a_failed_drill(cli):
    # Placement refuses it before anything changes (the README's exit 11), so, like the
    # other refusals docs/drills.md lists, no drill runs and none is recorded; it was a
    # recorded FAIL, exit 9.
    made = cli("provision", "qd-rv", "--json")
    assert made.returncode == 0, made
    gone = cli("deprovision", "qd-rv", "--yes")  # with its final backup
    assert gone.returncode == 0, gone
    drained = cli("cell", "drain", "default")
    assert drained.returncode == 0, drained
    try:
        refused = cli("drill", "restore", "qd-rv", "--target", "in-place", "--yes", "--json")
        assert refused.returncode == 11, refused
        assert "draining" in json.loads(refused.stdout)["error"]["message"]
    finally:
        undone = cli("cell", "drain", "default", "--undo")
        assert undone.returncode == 0, undone
    history = cli("drill", "history", "qd-rv", "--json")
    assert history.returncode == 0 and json.loads(history.stdout)["drills"] == [], history
    back = cli("drill", "restore", "qd-rv", "--target", "in-place", "--yes", "--json")
    assert back.returncode == 0, back
    assert json.loads(cli("status", "qd-rv", "--json").stdout)["status"] == "active"
