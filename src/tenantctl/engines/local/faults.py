"""Fault injection for the crash-convergence tests (issue 7).

``TENANTCTL_FAULT_AFTER=N`` makes the process ``os._exit`` (no cleanup, like
a kill) at its Nth resource write (create, update or delete, counted across
every run in the process). ``TENANTCTL_FAULT_POINT`` says where in that write:

- ``recorded`` (default): after the state file records it;
- ``unrecorded``: after the sandbox call, before the state records it: the
  resource exists but the state only holds the intent, which is what the
  adoption by name / ``tenantctl:urn`` tag must handle.

Unset, nothing happens. Never set it outside tests.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

FAULT_AFTER_ENV = "TENANTCTL_FAULT_AFTER"
FAULT_POINT_ENV = "TENANTCTL_FAULT_POINT"
FAULT_EXIT_CODE = 86
POINTS = ("recorded", "unrecorded")


class Faults:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        raw = env.get(FAULT_AFTER_ENV)
        self.after = int(raw) if raw else None
        self.point = env.get(FAULT_POINT_ENV) or "recorded"
        if self.point not in POINTS:
            raise ValueError(f"{FAULT_POINT_ENV} must be one of {POINTS}, not {self.point!r}")
        self.writes = 0

    def _die(self) -> None:
        sys.stderr.write(f"tenantctl: injected fault at resource write {self.after} ({self.point})\n")
        sys.stderr.flush()
        os._exit(FAULT_EXIT_CODE)

    def applied(self) -> None:
        """The sandbox call of a write returned; the state does not know yet."""
        if self.after is not None and self.point == "unrecorded" and self.writes + 1 == self.after:
            self._die()

    def recorded(self) -> None:
        """The state file now holds the write."""
        self.writes += 1
        if self.after is not None and self.point == "recorded" and self.writes == self.after:
            self._die()


FAULTS = Faults()
