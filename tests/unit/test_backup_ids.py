"""Backup ids sort by age, also within one second."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tenantctl.drills.store import new_id


def test_ids_of_one_second_sort_by_age_whatever_their_random_suffix() -> None:
    start = datetime(2026, 12, 5, 5, 2, 35, 1000, tzinfo=UTC)
    made = [new_id(start + timedelta(milliseconds=5 * i)) for i in range(100)]

    assert sorted(made) == made
    assert made[0].startswith("20261205T050235001Z-")
