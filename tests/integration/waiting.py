"""Waiting on what a test needs to have happened, not for a time: on a loaded
CI machine (2 cores, load averages of 20) another thread or process makes no
progress in any fixed time, while a condition polled to a generous deadline
holds as soon as it can (a passing test waits no longer than it must) and a
missed one fails saying what never happened."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(what: str, done: Callable[[], T], timeout: float = 120.0, interval: float = 0.02) -> T:
    """Poll ``done`` until it returns something true (returned); AssertionError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not (result := done()):
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not after {timeout:.0f} s")
        time.sleep(interval)
    return result
