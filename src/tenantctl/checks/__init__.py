"""`tenantctl check ID`: the isolation posture of one tenant, verified on its
LIVE resources (never on tenantctl's state or the registry's word for it).

One module per concern:

- ``db_posture``: the tenant's PostgreSQL role and tables (role attributes and
  ownership, RLS enabled + forced, unique keys including the tenant column, a
  session without the tenant setting fails closed);
- ``gateway_posture``: a pooled tenant's shared-pool gateway role (NOINHERIT,
  member of tenant roles only, owns and may read nothing as itself) and its
  cell's gateway secret (no resource policy);
- ``aws_posture``: KMS rotation and key policy, queue/DLQ encryption, bucket
  public access block, encryption and access logging, secret rotation, the
  alarm topic's encryption and access (the declared ``alarm_subscriptions`` of
  the cell its stack is applied in, each there and no other; no outsider in its policy), tags, the
  role's trust and access policies (the latter judged with ``iam_eval``);
- ``placement``: the tenant's cell, account and region (every resource ARN in
  the cell's account and the tenant's region, the prefix in the cell's bucket);
- ``network_posture``: the tenant's VPC (endpoint policies, flow logs, the
  default security group) and database instance (ingress from security
  groups only, hardening);
- ``rls_lints``: Supabase splinter's generic lints, adapted to a tenant schema
  (run by ``db_posture``);
- ``search_index``: the store's search index against tenantctl's analyzer
  (run by ``db_posture``: a warning, never a failure);
- ``iam_eval``: a small IAM policy evaluator.

Each workspace of the tenant gets the database checks and the AWS checks of
what it has of its own (key, queues, secret, role), in areas named after it
(``workspace legal/database``, ``workspace legal/aws``).

Every check yields one ``CheckResult`` named by a stable id; ``pass`` / ``warn``
(it holds, but something wants doing: said, with the fix, never an exit code) /
``fail`` (an invariant is broken: exit 8) / ``error`` (could not be verified,
e.g. the database is unreachable from here: exit 7 when nothing failed).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tenantctl.checks.results import CheckResult, Outcome, PostureReport, run_each
from tenantctl.errors import PostureCheckFailed

__all__ = ["CheckResult", "Outcome", "PostureReport", "check_tenant", "run_each", "verify_provisioned"]


def check_tenant(ws: Any, tenant_id: str, record: Any = None, applied: list[Any] | None = None) -> PostureReport:
    """Every posture check of ``tenant_id`` on its live resources; ``applied``: what the up that just ran
    established (``UpResult.applied``), reused instead of read back (``checks.reads``)."""
    from tenantctl.checks.aws_posture import aws_checks, move_sides
    from tenantctl.checks.db_posture import database_checks
    from tenantctl.checks.gateway_posture import gateway_checks
    from tenantctl.checks.network_posture import network_checks
    from tenantctl.errors import InvalidInput
    from tenantctl.naming import require_valid

    require_valid(tenant_id)
    record = record or ws.registry.require(tenant_id)
    if record.status.value in ("deprovisioning", "deprovisioned"):
        raise InvalidInput(f"tenant {tenant_id!r} is {record.status.value}: its resources are gone, nothing to check")
    if record.resources is None:
        raise InvalidInput(f"tenant {tenant_id!r} has no resources recorded (status {record.status.value}): "
                           "nothing to check")
    from tenantctl.checks.placement import placement_checks
    from tenantctl.checks.reads import GATEWAY_SECRET_READS, AppliedReads, LiveReads, cell_reads_memoized

    cell = ws.cell_of(record)
    platform = ws.cell_outputs(record.cell)  # the principals and shared resources of the tenant's own cell
    # (and of the other cell of a move between cells: its stack may be applied for either)
    platforms = {cell: platform if cell == record.cell else ws.cell_outputs(cell) for _, cell in move_sides(record)}
    clients = ws.clients_for(record)  # its cell's account, its region
    reads = LiveReads(record, clients)
    gateway_clients = clients
    if applied is not None:
        reads = AppliedReads(record, clients, applied)
        if record.tier.value == "pooled":
            scope = (record.cell, record.account_id, record.region)
            clients = cell_reads_memoized(clients, scope)
            gateway_clients = cell_reads_memoized(clients, scope, GATEWAY_SECRET_READS)
    # The two logins (each a secret read and a PostgreSQL session) and the network reads wait on the
    # servers: they run beside the AWS checks, each area on its own connection; the report keeps this order.
    with ThreadPoolExecutor(max_workers=3, thread_name_prefix="posture") as pool:
        network = pool.submit(list, network_checks(record, platform, clients))
        limit = applied_connection_limit(ws, record, platform)
        admin = closed_dedicated_admin(ws, record, platform, clients)
        database = pool.submit(list, database_checks(record, clients, platform=platform, connection_limit=limit,
                                                     admin=admin))
        gateway = (pool.submit(list, gateway_checks(record, platform, gateway_clients))
                   if record.tier.value == "pooled" and platform.get("gateway_secret_arn") else None)
        placed = list(placement_checks(record, cell, platform, clients, reads))
        # Its stack's cell's list (mid-move the target's, once the move applied its spec), as `refresh` judges it.
        subscribed = ws.stack_cell(record, record.current_stack) or cell
        subscriptions = [(s.protocol, s.endpoint) for s in subscribed.alarm_subscriptions]
        aws = list(aws_checks(record, platform, clients, reads, platforms, subscriptions))
        report = PostureReport(tenant_id=tenant_id)
        report.checks += [*placed, *database.result(), *(gateway.result() if gateway is not None else []), *aws,
                          *network.result()]
    for name in sorted(record.workspaces):
        report.checks += list(workspace_checks(record, name, platform, clients, limit, admin, platforms, applied,
                                               subscriptions))
    return report


def closed_dedicated_admin(ws: Any, record: Any, platform: dict[str, Any], clients: Any) -> Any:
    """How a suspended dedicated tenant's checks reach its server (its logins are
    NOLOGIN and there is no gateway): its admin login (``usage.measure.admin_connector``:
    the instance's master secret on AWS, the sandbox's admin there); None otherwise."""
    from tenantctl.checks.db_posture import closed_login

    if record.tier.value != "dedicated" or not closed_login(record) or not platform.get("db_admin_secret_arn"):
        return None
    from tenantctl.usage.measure import admin_connector

    return admin_connector(clients("secretsmanager"), platform["db_admin_secret_arn"],
                           rds=None if ws.is_sandbox else clients("rds"), application_name="tenantctl-check")


def applied_connection_limit(ws: Any, record: Any, platform: dict[str, Any]) -> int | None:
    """The tenant's logins' CONNECTION LIMIT as its applied spec (the stack file, when it is
    the spec the registry recorded) and its deployed cell give it; None when not known here
    (the check then asks only that a pooled login be bounded)."""
    from tenantctl.errors import TenantctlError
    from tenantctl.stackconfig import read_tenant, stack_file

    path = stack_file(ws.stacks_dir, record.current_stack)
    try:
        spec = read_tenant(path) if path.exists() else None
    except TenantctlError:
        return None
    if spec is None or spec.content_hash() != record.spec_digest:
        return None
    return spec.connection_limit(platform.get("db_connection_limit"))


def workspace_checks(record: Any, workspace: str, platform: dict[str, Any], clients: Any,
                     connection_limit: int | None = None, admin: Any = None,
                     platforms: dict[str, dict[str, Any]] | None = None,
                     applied: list[Any] | None = None, subscriptions: list[tuple[str, str]] = ()
                     ) -> list[CheckResult]:
    """The tenant's database and AWS checks of what a workspace has of its own,
    on its live resources, in areas named after it (``workspace legal/aws``);
    ``applied``: what the up that just ran established, reused as for the tenant's;
    ``subscriptions``: its cell's alarm subscriptions (its topic may have those)."""
    from tenantctl.checks.aws_posture import workspace_aws_checks
    from tenantctl.checks.db_posture import database_checks
    from tenantctl.drills.scope import workspace_view

    # The tenant's tier, not the drills' one-schema view of it: a dedicated tenant's workspace secret is
    # rotated by the tenant's own rotation function.
    view = workspace_view(record, workspace).model_copy(update={"tier": record.tier})
    area = f"workspace {workspace}"
    return [*database_checks(view, clients, workspace=workspace,
                             area=f"{area}/database", platform=platform, connection_limit=connection_limit,
                             admin=admin),
            *workspace_aws_checks(view, workspace, platform, clients, area=f"{area}/aws", platforms=platforms,
                                  applied=applied, subscriptions=subscriptions)]


def verify_provisioned(ws: Any, record: Any, applied: list[Any] | None = None) -> Any:
    """The check at the end of every provision: a violation raises
    PostureCheckFailed (a PolicyViolation, exit 8; the registry hold puts it in ``last_error``).
    Checks that could not run (say, a private RDS endpoint unreachable from the
    operator's machine) are noted in ``last_error`` but do not fail the provision."""
    report = check_tenant(ws, record.tenant_id, record, applied)
    if report.failed:
        raise PostureCheckFailed(report.summary(), rule=", ".join(f"{c.area}/{c.name}" for c in report.failed))
    if report.errors:
        return ws.registry.release(record, error=report.summary())
    return record
