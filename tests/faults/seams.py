"""Arming the faults on a process: wrappers around seams of tenantctl that the
package keeps anyway, so the shipped code holds no hook at all.

- resource writes: each LocalEngine handler's ``create`` / ``update`` /
  ``delete`` (``tenantctl.engines.local.handlers.HANDLERS``): when one returns,
  the sandbox has the write and the state does not (the ``unrecorded`` point);
  the next ``StateFile.save`` on that thread records it (the ``recorded``
  point): the engine writes what a call returned with its next intent or mark,
  or at the end of the run (maybe on another thread), so one save of a
  stack's state (or, ending a destroy, its removal) records every call on
  that stack since its last save (each counts). A save with no call before it
  records nothing.
- registry steps: ``RegistryWriter.acquire`` or ``acquire_new`` about to run
  (``provision:reserving``) and returned a record (``provision:reserved``),
  ``withdraw`` returned having deleted a refused provision's reservation (``provision:withdrawn``),
  ``mark_active`` about to run (``provision:applied``), ``lock_reviving`` about
  to run (``revive:locking``), ``lock_for`` returned
  with status ``deprovisioning`` (``deprovision:marked``) or for a move
  (``move:locked``), ``mark_deprovisioned``
  about to run (``deprovision:destroyed``) and returned (``deprovision:tombstoned``); ``save`` (or
  ``save_taking_slot``, ``save_giving_slot``) returned with a move's record (``move:<phase>``,
  ``move:cleared``); ``drills.backup.final_backup``
  of a workspace returned (``workspace:backed-up``); ``os_metrics.hand_over``
  or ``os_metrics.release`` returned (``cell-remove:os-metrics``), and
  ``cell_remove._give_up_os_metrics`` (``cell-remove:os-metrics-file``).
- throttling: ``botocore.session.Session.create_client``, which boto3's default
  session and every explicit one go through: each client the process makes gets
  the ``before-send`` hooks of ``faults.throttle``.
"""

from __future__ import annotations

import functools
import inspect
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

from faults.kill import FAULT_SIGINT_ENV, Faults
from faults.throttle import FAULT_THROTTLE_ENV, SharedTokenBucket, install_throttle, parse_throttle, throttle_file

_MISSING = object()


class _Patches:
    """setattr with an undo (an instance attribute shadowing a method is deleted again)."""

    def __init__(self) -> None:
        self.undone: list[Callable[[], None]] = []

    def set(self, owner: Any, name: str, value: Any) -> None:
        old = vars(owner).get(name, _MISSING)
        setattr(owner, name, value)
        self.undone.append(lambda: delattr(owner, name) if old is _MISSING else setattr(owner, name, old))

    def undo(self) -> None:
        while self.undone:
            self.undone.pop()()


def arm(environ: Mapping[str, str] | None = None, faults: Faults | None = None) -> Callable[[], None]:
    """Arm what ``environ`` (default: the process environment) asks for; returns the undo."""
    env = os.environ if environ is None else environ
    faults = Faults(env) if faults is None else faults
    patches = _Patches()
    if faults.after is not None:
        _arm_writes(faults, patches)
    if faults.step is not None:
        _arm_steps(faults, patches)
    if env.get(FAULT_SIGINT_ENV):
        _arm_sigint(int(env[FAULT_SIGINT_ENV]), patches)
    if env.get(FAULT_THROTTLE_ENV):
        _arm_throttle(parse_throttle(env[FAULT_THROTTLE_ENV]), SharedTokenBucket(throttle_file(env)), patches)
    return patches.undo


def _arm_sigint(at: int, patches: _Patches) -> None:
    """SIGINT to this process at the ``at``th resource registration (on Pulumi's executor threads; the
    signal is handled on the main thread, in the event loop running the program's tasks). Ctrl-C is
    handled as in a terminal: a test run started in the background (`cmd &` in a script) passes SIGINT
    on ignored, and Python then installs no handler for it."""
    import signal

    signal.signal(signal.SIGINT, signal.default_int_handler)

    from tenantctl.engines.local.runtime import UrnMonitor

    register = UrnMonitor.RegisterResource
    seen = [0]
    lock = threading.Lock()

    def registering(self: UrnMonitor, request: Any) -> Any:
        with lock:
            seen[0] += 1
            if seen[0] == at:
                os.kill(os.getpid(), signal.SIGINT)
        return register(self, request)

    patches.set(UrnMonitor, "RegisterResource", registering)


def _arm_writes(faults: Faults, patches: _Patches) -> None:
    from tenantctl.engines.local.handlers import HANDLERS, Desired
    from tenantctl.engines.local.state import StateFile

    # Handler calls returned per stack since its state's last save. Per stack, not per thread: the program's
    # resources run on Pulumi's executor threads, and the save that records a call may run on another.
    pending: dict[str, int] = {}
    lock = threading.Lock()

    def sandbox_call(call: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(call)
        def write(*args: Any, **kwargs: Any) -> Any:
            result = call(*args, **kwargs)
            faults.applied()
            d = next(a for a in args if isinstance(a, Desired))
            stack = d.urn.split("::", 1)[0].rsplit(":", 1)[-1]  # urn:pulumi:<stack>::<project>::...
            with lock:
                pending[stack] = pending.get(stack, 0) + 1
            return result

        return write

    for handler in {id(h): h for h in HANDLERS.values()}.values():
        for name in ("create", "update", "delete"):
            patches.set(handler, name, sandbox_call(getattr(handler, name)))

    def recording(write: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(write)
        def recorded(self: StateFile, *args: Any, **kwargs: Any) -> Any:
            with lock:
                count = pending.pop(self.stack, 0)
            result = write(self, *args, **kwargs)
            for _ in range(count):
                faults.recorded()
            return result

        return recorded

    # A destroy's last deletes are recorded by removing the state file itself.
    for name in ("save", "delete"):
        patches.set(StateFile, name, recording(getattr(StateFile, name)))


def _arm_steps(faults: Faults, patches: _Patches) -> None:
    from tenantctl.models import TenantStatus
    from tenantctl.registry import RegistryWriter

    def around(name: str, before: Callable[[inspect.BoundArguments], str | None] | None = None,
               after: Callable[[inspect.BoundArguments], str | None] | None = None) -> None:
        method = getattr(RegistryWriter, name)
        signature = inspect.signature(method)

        @functools.wraps(method)
        def step(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            if before and (reached := before(bound)):
                faults.reached(reached)
            result = method(*args, **kwargs)
            if after and result is not None and result is not False and (reached := after(bound)):  # nothing written
                faults.reached(reached)
            return result

        patches.set(RegistryWriter, name, step)

    def marked(bound: inspect.BoundArguments) -> str | None:
        if bound.arguments.get("operation") == "move":
            return "move:locked"
        return "deprovision:marked" if bound.arguments.get("status") == TenantStatus.deprovisioning else None

    for name in ("acquire", "acquire_new"):  # acquire_new: a new tenant's record, with its cell's slot
        around(name, before=lambda _: "provision:reserving", after=lambda _: "provision:reserved")
    around("withdraw", after=lambda _: "provision:withdrawn")
    around("mark_active", before=lambda _: "provision:applied")
    around("lock_for", after=marked)
    around("lock_reviving", before=lambda _: "revive:locking")  # a revive's first write: lock and slot
    around("mark_deprovisioned", before=lambda _: "deprovision:destroyed", after=lambda _: "deprovision:tombstoned")

    def moved(bound: inspect.BoundArguments) -> str | None:
        changes = bound.arguments.get("changes", {})
        if "move" not in changes:
            return None
        return f"move:{changes['move'].phase.value}" if changes["move"] is not None else "move:cleared"

    around("save", after=moved)
    around("save_taking_slot", after=moved)  # a new move's first record, with its target's slot
    around("save_giving_slot", after=moved)  # the move's last record, with the left store's slot

    from tenantctl.drills import backup

    final_backup = backup.final_backup

    @functools.wraps(final_backup)
    def backed_up(*args: Any, **kwargs: Any) -> Any:
        result = final_backup(*args, **kwargs)
        if kwargs.get("workspace") is not None:
            faults.reached("workspace:backed-up")
        return result

    patches.set(backup, "final_backup", backed_up)

    from tenantctl.operations import cell_remove, os_metrics

    def reaching(step_name: str, call: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(call)
        def step(*args: Any, **kwargs: Any) -> Any:
            result = call(*args, **kwargs)
            faults.reached(step_name)
            return result

        return step

    for name in ("hand_over", "release"):
        patches.set(os_metrics, name, reaching("cell-remove:os-metrics", getattr(os_metrics, name)))
    patches.set(cell_remove, "_give_up_os_metrics",
                reaching("cell-remove:os-metrics-file", cell_remove._give_up_os_metrics))


def _arm_throttle(rules: Mapping[str, float], bucket: SharedTokenBucket, patches: _Patches) -> None:
    from botocore.session import Session

    create_client = Session.create_client

    @functools.wraps(create_client)
    def throttled_client(self: Session, *args: Any, **kwargs: Any) -> Any:
        client = create_client(self, *args, **kwargs)
        install_throttle(client, rules, bucket)
        return client

    patches.set(Session, "create_client", throttled_client)
