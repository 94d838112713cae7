"""The tier side of a move to another account or region (``move_keyed``): the
target stack's spec for a pooled or dedicated target, and the one tier
change that path cannot make.

A dedicated store's resources (VPC, rotation function, RDS instance, its
subnet and parameter groups, log groups, database) are named after the
tenant id, not after the stack: ``<id>.k<N>`` cannot lend them its name (RDS
identifiers and database names take no dot, and ``<id>-k<N>`` is another
valid tenant's name). Those names are unique per account and region only, so
a second dedicated store stands beside the first in another account or
region, never in the same one (``move._refuse_cell``). On the sandbox every
cell's "RDS instance" is a database of one PostgreSQL server, named after the
tenant: a dedicated -> dedicated move there would build the target into the
source's own database, so it is refused.
"""

from __future__ import annotations

from datetime import datetime

from tenantctl.models import CellSpec, DedicatedSpec, TenantSpec, Tier
from tenantctl.workspace import Workspace


def keyed_target(spec: TenantSpec, tier: Tier, cell: CellSpec, started: datetime) -> TenantSpec:
    """``spec`` built again in ``cell`` as ``tier``: a dedicated target keeps
    the source's dedicated settings (or takes the defaults), its final
    snapshot named after ``started`` (a tenant moved back and forth deletes
    more than one instance per region, and snapshot names are unique)."""
    dedicated = None
    if tier is Tier.dedicated:
        dedicated = (spec.dedicated or DedicatedSpec()).model_copy(
            update={"final_snapshot_suffix": f"{started:%Y%m%d%H%M%S}"})
    return spec.model_copy(update={"cell": cell.name, "region": cell.region, "tier": tier, "dedicated": dedicated})


def one_server_refusal(ws: Workspace, from_tier: Tier, tier: Tier, from_cell: str, to_cell: str,
                       apply_cell: bool = True) -> str | None:
    """Why a dedicated store cannot be built beside the tenant's dedicated one
    (both cells' databases on one server: the sandbox), or None.
    ``apply_cell=False`` (a preview): a target cell not applied yet is not
    applied, and judged once it exists."""
    if from_tier is not Tier.dedicated or tier is not Tier.dedicated:
        return None
    # The target cell is applied first if it is not up yet (as its preflight would): its endpoint must be known.
    here = ws.cell_outputs(from_cell)
    there = ws.ensure_cell(to_cell) if apply_cell else ws.cell_outputs(to_cell)
    where = [(outputs.get("db_endpoint"), outputs.get("db_port")) for outputs in (here, there)]
    if None in where[0] or where[0] != where[1]:
        return None
    return ("its dedicated database is named after it and both cells' databases are on one PostgreSQL server "
            "(the sandbox), so a second one cannot stand beside it; move it with --tier pooled (then back to "
            "dedicated in the target cell)")
