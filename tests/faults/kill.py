"""Killing a run (``os._exit(86)``: no cleanup, no lock release, like ``kill -9``).

- ``TENANTCTL_FAULT_AFTER=N``: at the Nth resource write of the LocalEngine
  (create, update or delete; counted across every run in the process).
  ``TENANTCTL_FAULT_POINT`` says where in that write: ``recorded`` (default,
  after the state file records it) or ``unrecorded`` (after the sandbox call,
  before the state records it: the resource exists, the state holds only the
  intent, which the adoption by name / ``tenantctl:urn`` tag must handle).
- ``TENANTCTL_FAULT_AFTER=<step>``: at a named registry step, one of ``STEPS``:
  ``provision:reserving`` (placement chose the cell, the tenant's registry
  reservation is about to be written: a new tenant's with its cell's slot),
  ``provision:reserved`` (the registry reservation is written, nothing else),
  ``provision:withdrawn`` (a new tenant's provision refused before its first
  change withdrew its reservation: its record deleted, its cell's slot given back with it),
  ``provision:applied`` (every resource exists, the record is not yet active),
  ``deprovision:marked`` (record locked and ``deprovisioning``, nothing removed),
  ``deprovision:destroyed`` (every resource removed, no tombstone yet),
  ``deprovision:tombstoned`` (the tombstone written, with its cell's slot given back),
  ``revive:locking`` (an in-place restore of a tombstone passed its checks,
  its first registry write, the tombstone's lock with its cell's slot, is
  about to run),
  ``move:locked`` (a new move's run holds the tenant's lock, its move not
  recorded yet), ``move:<phase>`` (a move's record has just been written with that phase:
  ``preparing``, ``copying``, ``freezing``, ``switched``, ``rolling_back``; the
  phase's work not begun) and ``move:cleared`` (the move's record removed,
  with the slot of the store it left given back),
  ``workspace:backed-up`` (`workspace remove` took the workspace's final
  backup, nothing removed yet), ``cell-remove:os-metrics`` (`cell remove`
  handed its RDSOSMetrics log group over to another cell, or gave it back to
  the account; its own stack file still says it manages it, its stack is up),
  ``cell-remove:os-metrics-file`` (then its own stack file said it no longer
  manages the group; its stack not destroyed yet).

``TENANTCTL_FAULT_SIGINT=N`` does not kill: at the Nth resource registration of
the Pulumi program (preview or up, in-process under the LocalEngine) the process
sends itself SIGINT, as a Ctrl-C landing while the program's tasks are pending.

``TENANTCTL_FAULT_POINT=interrupted`` with a named step: Ctrl-C there instead
(SIGINT to the process, handled as in a terminal) rather than dying, to see
what an interrupt right after that registry write leaves.

``Faults`` only counts and dies (or interrupts); ``faults.seams`` calls it from the package's seams.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

FAULT_AFTER_ENV = "TENANTCTL_FAULT_AFTER"
FAULT_POINT_ENV = "TENANTCTL_FAULT_POINT"
FAULT_SIGINT_ENV = "TENANTCTL_FAULT_SIGINT"
FAULT_EXIT_CODE = 86
POINTS = ("recorded", "unrecorded", "interrupted")
STEPS = ("provision:reserving", "provision:reserved", "provision:withdrawn", "provision:applied",
         "deprovision:marked", "deprovision:destroyed", "deprovision:tombstoned", "revive:locking",
         "move:locked", "move:preparing", "move:copying", "move:freezing", "move:switched", "move:rolling_back",
         "move:cleared",
         "workspace:backed-up", "cell-remove:os-metrics",
         "cell-remove:os-metrics-file")


class Faults:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        raw = (env.get(FAULT_AFTER_ENV) or "").strip()
        self.after: int | None = None
        self.step: str | None = None
        if raw.isdigit():
            self.after = int(raw)
        elif raw:
            if raw not in STEPS:
                raise ValueError(
                    f"{FAULT_AFTER_ENV} must be a number of resource writes or one of {STEPS}, not {raw!r}")
            self.step = raw
        self.point = env.get(FAULT_POINT_ENV) or "recorded"
        if self.point not in POINTS:
            raise ValueError(f"{FAULT_POINT_ENV} must be one of {POINTS}, not {self.point!r}")
        self.calls = 0  # sandbox calls of resource writes returned
        self.writes = 0  # of those, recorded in the state file

    def die(self, where: str) -> None:
        sys.stderr.write(f"tenantctl: injected fault at {where}\n")
        sys.stderr.flush()
        os._exit(FAULT_EXIT_CODE)

    def applied(self) -> None:
        """The sandbox call of a write returned; the state does not know yet."""
        self.calls += 1
        if self.after is not None and self.point == "unrecorded" and self.calls == self.after:
            self.die(f"resource write {self.after} ({self.point})")

    def recorded(self) -> None:
        """The state file now holds the write."""
        self.writes += 1
        if self.after is not None and self.point == "recorded" and self.writes == self.after:
            self.die(f"resource write {self.after} ({self.point})")

    def reached(self, step: str) -> None:
        """A named registry step of provision / deprovision is done."""
        assert step in STEPS, step
        if self.step == step and self.point == "interrupted":
            self.interrupt(f"step {step}")
        elif self.step == step:
            self.die(f"step {step}")

    @staticmethod
    def interrupt(where: str) -> None:
        """Ctrl-C now: raised as KeyboardInterrupt in the main thread (where the registry steps run)
        as soon as this returns. Python's own handler first: a test run started in the background
        (`cmd &` in a script) passes SIGINT on ignored."""
        import signal

        sys.stderr.write(f"tenantctl: injected Ctrl-C at {where}\n")
        sys.stderr.flush()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.kill(os.getpid(), signal.SIGINT)
