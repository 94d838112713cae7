"""Which tenants a fleet-wide read runs on (`refresh`, `check`): the named ones,
every tenant (`--all`) or every tenant of one cell (`--cell`), never a tenant
whose resources are gone (deprovisioned, or being deprovisioned); the ones of
them a read skips, with why, the same way for every such read; how a fleet
command reports a tenant it skipped or whose run failed (the others still run);
and where a listed tenant lives (`list --region / --account / --cell`)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from pydantic import BaseModel

from tenantctl.errors import InvalidInput, TenantctlError, UsageError
from tenantctl.models import CellSpec, TenantRecord, TenantStatus
from tenantctl.naming import account_of_arn, region_of_arn
from tenantctl.timestamps import utc_minute
from tenantctl.workspace import Workspace

GONE = (TenantStatus.deprovisioned, TenantStatus.deprovisioning)
_ACCOUNT_ID = re.compile(r"\d{12}")


class Skipped(BaseModel):
    """A selected tenant a fleet-wide read leaves alone, and why (reported, in --json too)."""

    tenant_id: str
    reason: str


class Failed(BaseModel):
    """A tenant whose run in a fleet command could not run or stopped, the error and its exit code
    (the others still run; the command exits with the worst: ``worst_exit``)."""

    tenant_id: str
    error: str
    exit_code: int

    @classmethod
    def of(cls, tenant_id: str, exc: Exception) -> Failed:
        if isinstance(exc, TenantctlError):
            return cls(tenant_id=tenant_id, error=str(exc), exit_code=exc.exit_code)
        return cls(tenant_id=tenant_id, error=f"unexpected {type(exc).__name__}: {exc}", exit_code=1)

    def line(self) -> str:
        """How its progress line ends."""
        return f"failed (exit {self.exit_code}): {self.error}"


def worst_exit(failed: Sequence[Failed]) -> int:
    """The highest failed tenant's exit code (0: none failed)."""
    return max((f.exit_code for f in failed), default=0)


def in_defined_cells(ws: Workspace, records: Sequence[TenantRecord]) -> tuple[
        list[tuple[TenantRecord, CellSpec]], list[Skipped]]:
    """``records`` whose cell stacks/ defines, each with its cell, and the others
    skipped (its account cannot be read: another project's cell sharing the
    registry, or a stack file removed), so one odd record neither fails nor
    silently drops out of a fleet-wide `check` or `refresh`."""
    cell_of = ws.cells_of(records)
    kept = [(r, spec) for r in records if (spec := cell_of[r.tenant_id]) is not None]
    return kept, [Skipped(tenant_id=r.tenant_id, reason=ws.undefined_cell(r))
                  for r in records if cell_of[r.tenant_id] is None]


def move_side(record: TenantRecord) -> tuple[str | None, str | None, str, str] | None:
    """Where the other stack of the record's open move is, (region, account, cell,
    what it is there), its region and account read from its store's secret ARN (so
    a cell no longer in stacks/ is no blind spot): once switched, the one it left,
    kept for the rollback window; before, the one being built. None: no open move,
    or no other store yet."""
    move = record.move
    if move is None or record.resources is None:
        return None
    if move.new_store is not None and record.resources.store == move.new_store:
        until = f" until {utc_minute(move.window_ends_at)}" if move.window_ends_at else ""
        store, cell = move.old_store, move.from_cell
        what = f"moving out: old stack kept for the rollback window{until}"
    elif move.new_store is not None:
        store, cell, what = move.new_store, move.to_cell, f"moving in: new stack being built ({move.phase.value})"
    else:
        return None
    return region_of_arn(store.secret_arn), account_of_arn(store.secret_arn), cell, what


class PlacedIn:
    """Whether a record has a stack in ``region``, ``account`` and ``cell`` (each
    None: any): where it lives, by the record's own region, account and cell (the
    ones its cell had when it was placed or moved there; no account: the
    registry's own, the home cell's), or the other side of its open move (between
    cells, accounts or regions), which ``via_move`` says (an operator listing an
    account or a cell sees everything it holds)."""

    def __init__(self, region: str | None, account: str | None, home: str | None, cell: str | None = None) -> None:
        self.region, self.account, self.home, self.cell = region, account, home, cell

    def _there(self, region: str | None, account: str | None, cell: str) -> bool:
        return self.region in (None, region) and self.account in (None, account or self.home) and \
            self.cell in (None, cell)

    def via_move(self, record: TenantRecord) -> str | None:
        """What the record holds here through its move, when it does not live here."""
        side = move_side(record)
        if side is None or self._there(record.region, record.account_id, record.cell) or not self._there(*side[:3]):
            return None
        return side[3]

    def __call__(self, record: TenantRecord) -> bool:
        return self._there(record.region, record.account_id, record.cell) or self.via_move(record) is not None


def placed_in(ws: Workspace, region: str | None, account: str | None, cell: str | None = None) -> PlacedIn | None:
    """``PlacedIn`` for `list --region / --account / --cell`; None: no such filter."""
    if region is None and account is None and cell is None:
        return None
    if account is not None and not _ACCOUNT_ID.fullmatch(account):
        raise UsageError(f"Invalid value for '--account': {account!r} is not an AWS account id (12 digits).")
    if region is not None:
        from tenantctl.aws import require_known_region

        require_known_region(region)
    return PlacedIn(region, account, ws.platform_outputs().get("account_id") if account is not None else None, cell)


def select(ws: Workspace, tenant_ids: Sequence[str], every: bool, cell: str | None = None,
           verb: str = "refresh") -> list[TenantRecord]:
    """The records to ``verb``: the named tenants, or every tenant not
    deprovisioned (of ``cell`` only, when given)."""
    if not tenant_ids and not every and cell is None:
        raise UsageError(f"Missing argument 'ID...': name the tenants to {verb}, or pass --all or --cell")
    if bool(tenant_ids) + every + (cell is not None) > 1:
        raise UsageError("Invalid value: tenant ids, --all and --cell exclude each other (one of them, not both)")
    if cell is not None:
        ws.cell(cell)  # an unknown cell is refused (exit 6), not an empty report
        return [r for r in ws.registry.iter_all(cell=cell) if r.status not in GONE]
    if every:
        return [r for r in ws.registry.iter_all() if r.status not in GONE]
    records = []
    for tenant_id in dict.fromkeys(tenant_ids):
        record = ws.registry.require(tenant_id)
        if record.status in GONE:
            raise InvalidInput(f"tenant {tenant_id!r} is {record.status.value}: nothing to {verb}")
        records.append(record)
    if len(records) == 1:  # named on its own: a cell stacks/ does not define is refused (exit 3), not skipped
        ws.cell_of(records[0])
    return records
