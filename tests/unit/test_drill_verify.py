"""How a restored target's tables are judged against a backup's manifest."""

from __future__ import annotations

from tenant_runtime.tables import RETIRED_TABLES
from tenantctl.drills.models import TableCheck
from tenantctl.drills.verify import compare_tables

DOCS = TableCheck(rows=3, checksum="42")
POSTINGS = TableCheck(rows=9, checksum="7")


def failed(checks) -> set[str]:
    return {c.name for c in checks if not c.ok}


def test_a_table_the_template_retired_may_be_gone_from_an_upgraded_target():
    expected = {"documents": DOCS, "search_postings": POSTINGS}
    checks = compare_tables(expected, {"documents": DOCS}, retired=frozenset(RETIRED_TABLES))
    assert failed(checks) == set()
    retired = [c.expected for c in checks if c.name == "table search_postings: retired"]
    assert retired == ["9 rows (earlier index layout)"]


def test_only_retired_tables_may_be_missing_and_a_present_one_is_still_compared():
    expected = {"documents": DOCS, "search_postings": POSTINGS}
    assert failed(compare_tables(expected, {"search_postings": POSTINGS}, retired=frozenset(RETIRED_TABLES))) == {
        "table documents: rows", "table documents: checksum"}
    # Not declared retired (a backup of this layout), or there but different: a failure as before.
    assert failed(compare_tables(expected, {"documents": DOCS})) == {
        "table search_postings: rows", "table search_postings: checksum"}
    changed = {"documents": DOCS, "search_postings": TableCheck(rows=8, checksum="7")}
    assert failed(compare_tables(expected, changed, retired=frozenset(RETIRED_TABLES))) == {
        "table search_postings: rows"}


def test_a_table_added_since_the_backup_may_be_there_empty_and_nothing_else():
    """A backup from before search_stats, restored in place: the template
    re-applied by the restore creates the table empty."""
    assert failed(compare_tables({"documents": DOCS}, {"documents": DOCS, "search_stats": TableCheck(
        rows=0, checksum="0")})) == set()
    assert failed(compare_tables({"documents": DOCS}, {"documents": DOCS, "search_stats": TableCheck(
        rows=2, checksum="5")})) == {"table search_stats: rows", "table search_stats: checksum"}
    assert failed(compare_tables({"documents": DOCS}, {"documents": DOCS, "summaries": TableCheck(
        rows=0, checksum="0")})) == {"table summaries: rows", "table summaries: checksum"}
