"""The RDSOSMetrics log group of an account and region: one group (RDS fixes
its name) that every RDS instance there with enhanced monitoring writes to,
managed by one cell's stack (``CellSpec.os_metrics_group``), never deleted
by a cell's destroy (``retain_on_delete``: it is account-wide).

When the cell that manages it is removed (`cell remove`), the group goes on:
- to another cell of the account and region (the *heir*): its stack file gets
  ``os_metrics_group`` and ``os_metrics_adopted`` (its up imports the group,
  then brings it to its own key and tags), and an applied heir is applied at
  once, so the group is under a live key before the removed cell's key is
  scheduled for deletion;
- with no other cell there, back to the account (*released*): its KMS key
  disassociated (the removed cell's key is about to be scheduled for deletion;
  CloudWatch Logs encrypts with its own keys again, as for a group RDS makes)
  and tenantctl's tags removed, so `audit` claims it for no stack; a later
  `cell add` there adopts it.
"""

from __future__ import annotations

from typing import Any

from tenantctl.engines.base import EventSink, phase
from tenantctl.errors import engine_step
from tenantctl.models import CellSpec
from tenantctl.naming import RDS_OS_METRICS_GROUP as GROUP
from tenantctl.workspace import Workspace, same_account_region


def heir(ws: Workspace, spec: CellSpec, target_account: str | None) -> CellSpec | None:
    """The cell of ``spec``'s account and region that takes the group over from
    ``spec``: one that has it already (a removal killed after handing it over),
    else the first applied one by name, else the first by name; never one being
    removed itself; None: no other cell there."""
    others = [c for c in same_account_region(ws, spec, target_account) if not c.retiring]
    ranked = sorted(others, key=lambda c: (not c.os_metrics_group, not _applied(ws, c), c.name))
    return ranked[0] if ranked else None


def _applied(ws: Workspace, spec: CellSpec) -> bool:
    return bool(ws.cell_outputs(spec.name).get("bucket"))


def unapplied(ws: Workspace, to: CellSpec) -> str | None:
    """Why ``to`` cannot take the group over now, or None: an applied heir is applied by
    the handover, which must change nothing but the group, so its stack must be applied
    as committed already (its file, and tenantctl's program), or differ only by the
    handover itself (a removal killed during the heir's up)."""
    from tenantctl.fingerprint import cell_hash
    from tenantctl.registry_cells import applied_of

    if not _applied(ws, to):
        return None
    recorded = applied_of(ws.registry.counter_items([to.name])[to.name])
    before = to.model_copy(update={"os_metrics_group": False, "os_metrics_adopted": False})
    if recorded in (cell_hash(to, ws.project_dir), cell_hash(before, ws.project_dir)):
        return None
    return (f"cell {to.name!r}, which takes the {GROUP} log group over, is applied at once by the removal, and its "
            "stack file or tenantctl's program changed since its last up: apply it first (`tenantctl apply`, or "
            f"`tenantctl cell add {to.name}`), then remove again; nothing was changed")


def adopting(ws: Workspace, spec: CellSpec) -> CellSpec:
    """A new cell that is to manage the group, with ``os_metrics_adopted`` when its
    account and region has the group already (given back by a removed cell, or made
    by RDS for an instance with enhanced monitoring that tenantctl does not manage):
    its up imports it instead of failing to create a second one."""
    if not spec.os_metrics_group or spec.os_metrics_adopted:
        return spec
    logs = ws.client.in_account(spec.account_role_arn, spec.region)("logs")
    return spec.model_copy(update={"os_metrics_adopted": exists(logs)})


def exists(logs: Any) -> bool:
    """The account and region has the group (``logs``: a client there)."""
    groups = logs.describe_log_groups(logGroupNamePrefix=GROUP)["logGroups"]
    return any(g["logGroupName"] == GROUP for g in groups)


def hand_over(ws: Workspace, to: CellSpec, adopted: bool, on_event: EventSink | None = None) -> None:
    """``to`` manages the group from now on: its stack file says so (under its
    lease; ``adopted``: the group exists, so its up imports it), and an applied
    cell is applied. Idempotent: a cell whose file says so already and was
    applied from it is left alone."""
    from tenantctl import cell_lease
    from tenantctl.stackconfig import write_cell

    def write() -> None:
        current = ws.cell(to.name)  # read under the lease: another run may have written it
        write_cell(ws.stacks_dir, current.model_copy(update={"os_metrics_group": True,
                                                             "os_metrics_adopted": adopted}))

    if not _applied(ws, to):  # never applied on this target: its first up imports it
        with cell_lease.held(ws.registry, to.name, "cell remove"):
            write()
        return
    phase(on_event, to.stack, f"handing the {GROUP} log group over to cell {to.name}")
    with engine_step(f"cell {to.name}: taking over the {GROUP} log group"):
        ws.up_cell(to.name, on_event, unless_applied=True, write=write)


def release(logs: Any, spec: CellSpec) -> None:
    """The group back to the account: no tenantctl key, no tenantctl tags (idempotent; no group: nothing)."""
    from tenantctl.engines.local.handlers.base import ignore_missing

    if not exists(logs):
        return
    ignore_missing(lambda: logs.disassociate_kms_key(logGroupName=GROUP), "ResourceNotFoundException")
    logs.untag_log_group(logGroupName=GROUP, tags=sorted(spec.tags()))
