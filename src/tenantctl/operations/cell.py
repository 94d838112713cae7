"""Cells: add one (write its stack file, apply its platform stack, start its
counter; or only write the file, for `tenantctl apply` to apply once it is
committed), list them, show one (counts, caps, the account's walls), drain one
(no new tenant is placed there; its tenants stay and keep being updated).

A cell's region and account are fixed once it exists: its tenants' data lives
there. Adding a cell is the only way a region gets more room (placement never
creates one by itself): it is a new VPC, PostgreSQL and bucket, possibly in
another account whose role must exist first.
"""

from __future__ import annotations

from ipaddress import ip_network
from typing import Any

from pydantic import BaseModel, ValidationError

from tenant_runtime.registry import item_to_counts
from tenantctl.cell_database import ConnectionBudget, connection_budget
from tenantctl.engines.base import EventSink, UpResult
from tenantctl.errors import InvalidInput, UsageError
from tenantctl.models import CellSpec, DedicatedSpec, Tier, describe_validation_error
from tenantctl.naming import (
    DEFAULT_CELL,
    PLATFORM_STACK,
    cell_name_problem,
    new_cell_name_problem,
    partition_of,
    partition_of_arn,
    require_deployable,
    resource_name,
)
from tenantctl.operations import os_metrics
from tenantctl.operations.deletion_protection import snapshot_exists
from tenantctl.operations.refresh import pending_cell_repair
from tenantctl.registry_cells import AppliedBudget, applied_budget_of, applied_of
from tenantctl.stackconfig import read_cell, stack_file, write_cell
from tenantctl.workspace import Workspace, same_account_region


class CellInfo(BaseModel):
    """A cell as `cell list` / `cell show` report it."""

    name: str
    stack: str
    region: str  # where it was deployed (its outputs) once applied, else its stack file's
    account_id: str | None  # from its outputs once applied, else from its role (None: the target's own)
    # Why its stack file cannot be applied: it names another region or account than the cell was
    # deployed in (``Workspace.relocation``; `apply` and placement refuse it, exit 3), or None.
    relocated: str | None = None
    account_role_arn: str | None
    tiers: list[Tier]
    max_pooled_tenants: int
    db_connection_limit: int  # each pooled tenant login role's CONNECTION LIMIT (a tenant may override it)
    vpc_cidr: str
    draining: bool
    allow_overcommit: bool = False  # its stack file lets its connection cap pass what its database leaves
    deployed: bool
    # Its stack file against its last up: "as committed", "changed since" (`tenantctl apply` applies it),
    # "never" (not deployed), "partly" (not deployed, some resources made: an up stopped half way, or
    # running now), "unknown" (applied before tenantctl recorded what from)
    applied: str = "unknown"
    repair_pending: str | None = None  # its last up failed after its first change (`refresh` says so too)
    pooled: int | None = None  # tenants holding a slot (None: the cell has no counter yet)
    dedicated: int | None = None
    bucket: str | None = None
    database: str | None = None
    waker_role_arn: str | None = None  # in another account: what the runtime assumes to wake its tenants
    alarm_subscriptions: list[str] = []  # PROTOCOL=ENDPOINT each: where every alarm topic of the cell delivers
    # `show` only (read from the cell's account): each account quota a new pooled tenant uses, with its
    # usage, and the ones it would exceed there (walls: placement passes the cell over)
    quotas: list[str] = []
    walls: list[str] = []
    # `show` only: the pooled logins' connection cap against the live database's connections
    connections: ConnectionBudget | None = None
    # `show --recount`: each count it corrected, [the counter's, the records'] (empty: it was right)
    recounted: dict[str, list[int]] | None = None
    # `add` of a new cell: what it found in its way, said and not refused (a warning each): what an
    # earlier cell of that name left there (`cell remove` leaves it on purpose), a given VPC range
    # another cell of its account and region overlaps
    warnings: list[str] = []


def stack_file_state(ws: Workspace, spec: CellSpec, item: dict[str, Any] | None) -> str:
    """The cell's stack file against its last up, from its counter ``item``: "as committed",
    "never" (not deployed), "partly" (not deployed, but its state holds resources: an up
    stopped half way), "unknown" (no fingerprint recorded) or "changed since". Its outputs
    (a Pulumi CLI call on AWS) are read only when the fingerprint differs, its state only
    when it has none."""
    from tenantctl.fingerprint import cell_hash

    applied = applied_of(item)
    if applied == cell_hash(spec, ws.project_dir):
        return "as committed"
    if not ws.cell_outputs(spec.name).get("bucket"):
        return "partly" if ws.engine.holds_resources(spec.stack) else "never"
    return "unknown" if applied is None else "changed since"


def _info(ws: Workspace, spec: CellSpec, outputs: dict[str, Any], item: dict[str, Any] | None) -> CellInfo:
    """``item``: the cell's counter item (None: no counter yet)."""
    placed, draining = item_to_counts(item) if item is not None else (None, False)
    return CellInfo(
        name=spec.name, stack=spec.stack, region=outputs.get("region") or spec.region,
        relocated=ws.relocation(spec, outputs),
        account_id=outputs.get("account_id") or spec.account_id, account_role_arn=spec.account_role_arn,
        tiers=spec.tiers, max_pooled_tenants=spec.max_pooled_tenants, db_connection_limit=spec.db_connection_limit,
        vpc_cidr=spec.vpc_cidr, allow_overcommit=spec.allow_overcommit,
        draining=spec.draining or draining, deployed=bool(outputs.get("bucket")),
        applied=stack_file_state(ws, spec, item), repair_pending=pending_cell_repair(item),
        pooled=None if placed is None else placed.get(Tier.pooled.value, 0),
        dedicated=None if placed is None else placed.get(Tier.dedicated.value, 0),
        bucket=outputs.get("bucket"), database=outputs.get("db_name"), waker_role_arn=outputs.get("waker_role_arn"),
        alarm_subscriptions=[f"{s.protocol}={s.endpoint}" for s in spec.alarm_subscriptions])


def _counter(ws: Workspace, name: str) -> dict[str, Any] | None:
    return ws.registry.counter_items([name])[name]


def platform_stack_file(ws: Workspace, region: str | None, owner: str | None) -> None:
    """The default cell's stack file (`platform preview` / `platform up`), with the
    given options laid over what it holds. Written new, it imports the account and
    region's RDSOSMetrics group when that exists (``os_metrics.adopting``)."""
    new = not stack_file(ws.stacks_dir, PLATFORM_STACK).exists()
    if not new and region is None and owner is None:
        return
    spec = cell_spec(ws, DEFAULT_CELL, {"region": region, "owner": owner})
    write_cell(ws.stacks_dir, os_metrics.adopting(ws, spec) if new else spec)


def cell_spec(ws: Workspace, name: str, options: dict[str, Any]) -> CellSpec:
    """The committed spec of ``name`` (if any) with ``options`` laid over it. A
    cell's region and account never change (its tenants' data is there)."""
    existing = read_cell(ws.stacks_dir, name)  # the default cell too is new until its stack file is written
    problem = cell_name_problem(name) if existing is not None else new_cell_name_problem(name)
    if problem:
        raise InvalidInput(f"cell {name!r}: {problem}", rule="cell-name")
    base = existing.model_dump(mode="json", exclude_none=True) if existing else {"name": name}
    given = {k: v for k, v in options.items() if v is not None}
    if existing is not None:
        for key in ("region", "account_role_arn"):
            if key in given and given[key] != getattr(existing, key):
                raise InvalidInput(f"cell {name!r} is in {existing.region} "
                                   f"({existing.account_role_arn or 'the target account'}): a cell's region and "
                                   "account never change (add another cell)")
    elif "region" not in given and name != DEFAULT_CELL:
        raise UsageError(f"Missing option '--region': cell {name!r} is new (its region never changes once given).")
    elif "region" in given:
        from tenantctl.aws import require_known_region

        require_known_region(given["region"])
        require_deployable(given["region"])  # a partition with no rotation application known: said, not a pattern
    try:
        return CellSpec.model_validate({**base, **given})
    except ValidationError as exc:
        raise InvalidInput(describe_validation_error(exc)) from None


def add(ws: Workspace, name: str, options: dict[str, Any], on_event: EventSink | None = None,
        write_only: bool = False) -> tuple[CellInfo, UpResult | None]:
    """Write the cell's stack file and apply it (idempotent: a re-run applies
    changed options). The home cell comes first: the registry is there.
    ``write_only``: the file alone, complete, for `tenantctl apply` to apply
    once committed (no UpResult). The file is written under the cell's lease
    (the spec read again there), so a run refused it changes nothing. A
    raised connection cap the live database cannot hold is refused unless
    the spec allows it (option ``allow_overcommit``: ``refuse_overcommit``)."""
    wanted = cell_spec(ws, name, options)  # a bad option is refused before the home cell is touched
    said = _refuse_added_overcommit(ws, wanted)
    new = name not in ws.cells()
    home = ws.ensure_platform(on_event)

    overlapping: list[str] = []  # cells of its account and region a given --vpc-cidr overlaps

    def write() -> CellSpec:
        spec = cell_spec(ws, name, options)
        if spec.name != DEFAULT_CELL and spec.runtime_principal_arn is None:
            # Tenant roles of the cell must trust the runtime, which reads the registry
            # in the home account: written down explicitly in the cell's spec.
            spec = spec.model_copy(update={"runtime_principal_arn": home["runtime_principal_arn"]})
        if spec.name not in ws.cells() and "os_metrics_group" not in options:
            spec = spec.model_copy(update={"os_metrics_group": not _shares_account_region(ws, spec,
                                                                                          home["account_id"])})
        if spec.name not in ws.cells() and "os_metrics_adopted" not in options:
            spec = os_metrics.adopting(ws, spec)
        if spec.name not in ws.cells():
            others = same_account_region(ws, spec, home["account_id"])
            if options.get("vpc_cidr") is None:
                spec = spec.model_copy(update={"vpc_cidr": free_vpc_cidr([c.vpc_cidr for c in others], spec.name)})
            else:
                overlapping[:] = [c.name for c in others
                                  if ip_network(c.vpc_cidr, strict=False).overlaps(ip_network(spec.vpc_cidr))]
        write_cell(ws.stacks_dir, spec)
        return spec

    if write_only:
        spec = write()
        info, result = _info(ws, spec, ws.cell_outputs(spec.name), _counter(ws, spec.name)), None
    else:
        result = ws.up_cell(name, on_event, write=write)
        info = _info(ws, ws.cell(name), result.outputs, _counter(ws, name))
    if new:
        info.warnings = _leftovers(ws, ws.cell(name))
    info.warnings += said
    if overlapping:
        info.warnings.append(f"cell {name!r}: its vpc_cidr {info.vpc_cidr} overlaps the VPC of cell(s) "
                             f"{', '.join(overlapping)} of its account and region: they cannot be peered or joined "
                             "by a transit gateway later (without --vpc-cidr a range of its own is picked)")
    if new:
        info.warnings += _other_partition(ws.cell(name))
    return info, result


def _other_partition(spec: CellSpec) -> list[str]:
    """A cell in another partition than the runtime its tenant roles trust: IAM does not
    cross partitions on AWS (moto lets it), so those roles could never be assumed."""
    runtime = spec.runtime_principal_arn
    partition = partition_of(spec.region)
    if runtime is None or partition_of_arn(runtime) == partition:
        return []
    return [f"cell {spec.name!r} is in partition {partition} ({spec.region}) and its tenant roles trust the runtime "
            f"{runtime}: on AWS no role is assumed across partitions, so its tenants could not be served; a fleet "
            f"in {partition} needs a platform (home cell) of its own there"]


def _refuse_added_overcommit(ws: Workspace, wanted: CellSpec) -> list[str]:
    """`cell add`'s ``refuse_overcommit``: against the budget the cell was last
    accepted at, or (not recorded) the one its stack file says. A new cell, or
    one never applied, has no database yet."""
    existing = ws.cells().get(wanted.name)
    if existing is None or not ws.cell_outputs(wanted.name).get("bucket"):
        return []
    applied = applied_budget_of(_counter(ws, wanted.name))
    return refuse_overcommit(ws, wanted, AppliedBudget.of(existing) if applied is None else applied)


def refuse_overcommit(ws: Workspace, wanted: CellSpec, applied: AppliedBudget | None) -> list[str]:
    """A change of an applied cell that grows what its file claims of its
    database (``CellSpec.connections_claimed``: the pooled logins' cap,
    max_pooled_tenants × db_connection_limit, and the platform_connections
    its own logins keep) past ``applied`` (what was last accepted; None: not
    known, nothing compared) while the cap is over what its live database
    then leaves tenant logins (``cell_database.connection_budget``) is
    refused (exit 3, rule ``connection-budget``) unless its spec says
    ``allow_overcommit``; then, or when the database could not be read, a
    warning says so. So a larger cap and a larger platform share are both a
    raise; a claim kept or lowered is never refused (a re-run, a step back,
    or a cap raised by what the platform gives up: no worse than what runs).
    The one check of `cell add` and of `apply` of a committed cell file."""
    if applied is None or wanted.connections_claimed <= applied.claimed:
        return []
    budget = connection_budget(ws, wanted)
    what = (f"cell {wanted.name!r}: max_pooled_tenants {wanted.max_pooled_tenants} x db_connection_limit "
            f"{wanted.db_connection_limit} = {wanted.connection_cap} connections its pooled tenants' logins may "
            f"hold, beside platform_connections {wanted.platform_connections} for the platform's own (applied "
            f"at {applied.cap} beside {applied.platform})")
    if budget.unread is not None:
        return [f"{what}, not compared with its database's ({budget.unread})"]
    if not budget.overcommits:
        return []
    over = f"{what}, over the {budget.room} its database leaves them ({budget.figures()})"
    if wanted.allow_overcommit:
        return [f"{over}: allowed by its stack file's allow_overcommit: true (--allow-overcommit)"]
    raise InvalidInput(f"{over}; nothing was written or applied: lower max_pooled_tenants, db_connection_limit or "
                       "platform_connections (--max-pooled, --db-connection-limit, --platform-connections), give "
                       "the database more connections (a larger db_instance_class, or max_connections in its "
                       "parameter group), or say it is meant: allow_overcommit: true in its stack file "
                       "(--allow-overcommit)", rule="connection-budget")


def _leftovers(ws: Workspace, spec: CellSpec) -> list[str]:
    """What an earlier cell named like ``spec`` (removed: `cell remove` deletes its stack
    file, counter and stack) left where ``spec`` now is. Its database's final snapshot
    stays, by design, under a name RDS fixes: this cell's removal would need it too,
    so it refuses until the snapshot is out of the way. Tombstones that name the old
    cell are history only (audit), and its counter is gone or taken over by this up."""
    from botocore.exceptions import BotoCoreError, ClientError

    final = resource_name(spec.stack, "final")
    try:
        if not snapshot_exists(ws.cell_clients(spec.name)("rds"), final):
            return []
    except (BotoCoreError, ClientError):  # a --write-only cell's role need not work yet: no warning, no failure
        return []
    return [f"cell {spec.name!r}: an earlier cell of this name left its database's final snapshot {final} in "
            f"{spec.region}; it is kept, but `tenantctl cell remove {spec.name}` is refused until it is copied "
            "aside under another name or deleted (RDS would name this cell's final snapshot the same)"]


# A dedicated tenant's VPC default (TenantSpec): kept free so a cell can be peered with one.
_DEDICATED_DEFAULT = ip_network(DedicatedSpec.model_fields["vpc_cidr"].default)


def free_vpc_cidr(taken: list[str], name: str) -> str:
    """The first 10.N.0.0/16 overlapping none of ``taken`` (the VPCs of the other cells of
    the new cell's account and region) nor the dedicated tenants' default: cells of one
    account and region can then be peered or joined by a transit gateway later."""
    used = [_DEDICATED_DEFAULT]
    for cidr in taken:
        try:
            used.append(ip_network(cidr, strict=False))
        except ValueError:  # not a network: its cell's up fails on it, whatever is picked here
            continue
    for second in range(256):
        candidate = ip_network(f"10.{second}.0.0/16")
        if not any(candidate.overlaps(u) for u in used):
            return str(candidate)
    raise InvalidInput(f"cell {name!r}: every 10.N.0.0/16 overlaps a cell of its account and region: "
                       "give its --vpc-cidr")


def _shares_account_region(ws: Workspace, spec: CellSpec, target_account: str) -> bool:
    """Another cell already runs in ``spec``'s account and region (so has the
    account-and-region resources AWS names itself, such as RDSOSMetrics)."""
    return any(c.os_metrics_group for c in same_account_region(ws, spec, target_account))


def list_cells(ws: Workspace) -> list[CellInfo]:
    """Every cell with its counts (one BatchGetItem for all of them)."""
    cells = ws.cells()
    items = ws.registry.counter_items(list(cells)) if ws.platform_outputs().get("registry_table") else {}
    return [_info(ws, spec, ws.cell_outputs(name), items.get(name)) for name, spec in cells.items()]


def show(ws: Workspace, name: str, recount: bool = False) -> CellInfo:
    """One cell; ``recount``: count its tenants from the registry (a full scan)
    and correct its counter, e.g. after a deprovision killed between its
    tombstone and giving the slot back."""
    from tenantctl import preflight
    from tenantctl.models import TenantSpec

    spec = ws.cell(name)
    registry = ws.registry
    corrected = None
    if recount:
        before = (registry.cell_counts([name]).get(name) or ({}, False))[0]
        counts = registry.recount(name)
        registry.set_counts(name, counts)
        corrected = {tier: [before.get(tier, 0), n] for tier, n in counts.items() if before.get(tier, 0) != n}
    outputs = ws.cell_outputs(name)
    info = _info(ws, spec, outputs, _counter(ws, name))
    info.recounted = corrected
    if info.deployed and not info.relocated:  # its clients would read the file's region, not the cell's
        probe = TenantSpec(id="probe", region=spec.region, cell=name)
        quotas = preflight.checks(probe, ws.cell_outputs(name), ws.cell_clients(name))
        info.quotas = [c.explain() for c in quotas]
        info.walls = [c.explain() for c in quotas if not c.ok]
    info.connections = connection_budget(ws, spec)
    return info


def drain(ws: Workspace, name: str, draining: bool = True) -> CellInfo:
    """Stop (or, ``draining=False``, resume) placing new tenants in the cell:
    in its stack file (the desired state) and in its counter item (what the
    race-free reservation checks), both under the cell's lease: an up running
    meanwhile would set the counter's flag back to what its file said."""
    from tenantctl import cell_lease

    ws.cell(name)  # NotFound before the registry is touched
    registry = ws.registry
    with cell_lease.held(registry, name, "cell drain"):
        spec = ws.cell(name).model_copy(update={"draining": draining})
        write_cell(ws.stacks_dir, spec)
        registry.set_draining(name, draining)
    return _info(ws, spec, ws.cell_outputs(name), _counter(ws, name))
