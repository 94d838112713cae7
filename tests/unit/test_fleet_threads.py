"""The fleet reads' thread pool (`usage --all`, `cost --all`, `report`): answers in the items'
order whatever finishes first, each reported once, and Ctrl-C stops it at once."""

from __future__ import annotations

import _thread
import threading
import time

import pytest

from tenantctl.errors import UsageError
from tenantctl.operations.fleet_threads import Watch, in_threads


def test_answers_come_in_the_items_order_whichever_finishes_first():
    seen: list[int] = []
    planned: list[int] = []

    def slow_first(i: int) -> int:
        time.sleep(0.02 * (5 - i))  # the last item finishes first
        return i * 10

    answers = in_threads(slow_first, list(range(5)), parallel=5, watch=Watch(on_plan=planned.append,
                                                                             on_result=seen.append))
    assert answers == [0, 10, 20, 30, 40]
    assert planned == [5] and sorted(seen) == answers and seen != answers  # reported as each finished


def test_one_thread_runs_the_items_here_one_after_another():
    here = threading.get_ident()
    assert in_threads(lambda i: (i, threading.get_ident() == here), [1, 2], parallel=1) == [(1, True), (2, True)]


@pytest.mark.parametrize("parallel", [0, -3])
def test_parallel_below_one_is_a_usage_error(parallel):
    with pytest.raises(UsageError, match="Invalid value for '--parallel'"):
        in_threads(lambda i: i, [1, 2], parallel=parallel)


def test_ctrl_c_starts_nothing_more_and_returns_at_once(ctrl_c_handled):
    """An interrupt leaves the items not started unstarted (a 40-item run of 2 s at 4 threads ends
    within the items already running), raised in the caller at once."""
    started: list[int] = []

    def work(i: int) -> int:
        started.append(i)
        time.sleep(0.2)
        return i

    threading.Timer(0.3, _thread.interrupt_main).start()
    began = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        in_threads(work, list(range(40)), parallel=4)
    assert time.monotonic() - began < 0.6
    time.sleep(0.5)  # what was running ends; nothing else starts
    assert len(started) <= 12, started
