"""`tenantctl drill backup | restore | run | history`: verified backups and restores."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from tenantctl.cli.options import JsonFlag, tenant_argument
from tenantctl.cli.output import console, err_console, print_json, table
from tenantctl.drills.restore_target import Target
from tenantctl.timestamps import utc_second

if TYPE_CHECKING:
    from tenantctl.drills.models import DrillReport
    from tenantctl.engines.base import EventSink
    from tenantctl.models import TenantRecord
    from tenantctl.workspace import Workspace

app = typer.Typer(name="drill", no_args_is_help=True,
                  help="Backup / restore drills: encrypted per-tenant backups, verified restores, RTO/RPO.")


Compress = Annotated[Optional[str], typer.Option(
    "--compress", metavar="METHOD[:LEVEL]",
    help="The dump's compression: gzip (default), zstd, lz4 or none, with an optional level (zstd:3); "
         "a method the PostgreSQL tools were built without is refused (exit 3), nothing written; an empty "
         "value is a usage error (exit 2).")]
# Text, not a Path: a trailing "/" (a directory to make) would be dropped.
MarkdownOut = Annotated[Optional[str], typer.Option("--markdown", help="Also write the markdown report here: "
                                                    "a directory (an existing one, or a path ending in /) gets "
                                                    "one <tenant>-<drill>.md per drill, a file every report of "
                                                    "the run, one after another.")]



WorkspaceOpt = Annotated[Optional[str], typer.Option(
    "--workspace", metavar="WS", help="A workspace of the tenant instead of the tenant itself: its schema and "
                                      "prefix, under its own key.")]


def _session(tenant_id: str, workspace: str | None = None, wake: "EventSink | None" = None):
    """The workspace, the record and the drill context (its cell's account, its
    region) of the tenant, or of one of its workspaces (``tenantctl.drills.scope``).
    ``wake``: a backup reads the database, so a hibernated tenant is woken first
    (its progress there)."""
    from tenantctl.drills.context import context_from_workspace
    from tenantctl.drills.scope import scoped_context
    from tenantctl.workspace import Workspace

    ws = Workspace()
    record = ws.registry.require(tenant_id)
    if wake is not None:
        from tenantctl.operations.hibernate import awake

        record = awake(ws, record, wake)
    ctx, record = scoped_context(context_from_workspace(ws, record), record, workspace)
    return ws, record, ctx


def _stopped(ws: "Workspace", record: "TenantRecord") -> bool:
    """A hibernated tenant's instance is stopped (one that cannot be read is drilled, and fails there)."""
    from tenantctl.errors import TenantctlError
    from tenantctl.operations.hibernate import instance_state

    try:
        return instance_state(ws, record) == "stopped"
    except TenantctlError:
        return False


def _of(tenant_id: str, workspace: str | None) -> str:
    return tenant_id if workspace is None else f"workspace {workspace} of {tenant_id}"


def _markdown_target(markdown: Optional[str]) -> Optional[Path]:
    from tenantctl.drills.report import markdown_target

    return None if markdown is None else markdown_target(markdown)


def _write_markdown(reports: list["DrillReport"], markdown: Optional[Path]) -> None:
    from tenantctl.drills.report import write_markdown

    if markdown is not None and reports:
        write_markdown(reports, markdown)


def _show(report: "DrillReport", json_out: bool) -> None:
    if json_out:
        return
    colour = "green" if report.passed else "red"
    who = _of(report.tenant_id, report.workspace)
    console.print(f"[{colour}]drill {report.drill_id} of {who}: {report.verdict.value.upper()}[/] "
                  f"(backup {report.backup_id or 'none'}, {report.backup_kind or 'n/a'})")
    rows = [(c.name, c.expected, c.actual, "ok" if c.ok else "FAIL") for c in report.checks]
    if rows:
        table("checks", ["check", "expected", "restored", ""], rows)
    rto = "n/a" if report.rto_seconds is None else f"{report.rto_seconds:.1f}s"
    rpo = "n/a" if report.rpo_seconds is None else f"{report.rpo_seconds:.1f}s ({report.rpo_basis})"
    console.print(f"RTO {rto} · RPO {rpo}" + (" · scratch cleaned up" if report.cleaned_up else
                                              f" · scratch kept: {report.scratch}" if report.scratch else ""))
    for note in report.notes:
        console.print(f"- {note}", highlight=False)
    for reason in report.reasons:
        console.print(f"[red]- {reason}[/]", highlight=False)


@app.command()
def backup(
    tenant_id: Annotated[str, tenant_argument("Tenant to back up.")],
    workspace: WorkspaceOpt = None,
    compress: Compress = None,
    json_out: JsonFlag = False,
) -> None:
    """Back up a tenant's database and object manifest, encrypted with the tenant key.

    Pooled: pg_dump of its schema; dedicated: an RDS snapshot (a logical dump on
    the sandbox). The manifest (row counts, checksums, objects, registry record)
    goes to <prefix>backups/<backup-id>/ next to the encrypted dump. Refused
    (exit 5, naming the holder) while another run holds the tenant's lock, or
    while it is still deprovisioning."""
    from tenantctl.cli.progress import engine_progress
    from tenantctl.drills.backup import backup as run
    from tenantctl.drills.compression import Compression

    compression = Compression.parse(compress)  # a bad value is refused before the sandbox is touched
    with engine_progress(f"backing up {_of(tenant_id, workspace)}") as on_event:
        _, record, ctx = _session(tenant_id, workspace, wake=on_event)
        manifest = run(ctx, record, compression=compression, on_event=on_event)  # its phase once not refused
    if json_out:
        print_json(manifest.model_dump(mode="json", exclude={"record"}))
        return
    size = f"{manifest.dump.plaintext_bytes} bytes dumped, {manifest.dump.stored_bytes} stored" if manifest.dump \
        else f"snapshot {manifest.snapshot.identifier}"
    kind = f"{manifest.kind}, {manifest.compression}" if manifest.compression else manifest.kind
    console.print(f"[green]backup {manifest.backup_id}[/] of {_of(tenant_id, workspace)} ({kind}): {size}; "
                  f"{len(manifest.objects)} objects in the manifest")
    table("tables", ["table", "rows", "checksum"], [(n, t.rows, t.checksum) for n, t in manifest.tables.items()])


@app.command()
def restore(
    tenant_id: Annotated[str, tenant_argument("Tenant whose backup to restore.")],
    workspace: WorkspaceOpt = None,
    backup_id: Annotated[str, typer.Option("--backup", help="Backup id, or 'latest'.")] = "latest",
    target: Annotated[Target, typer.Option(
        help="scratch (a new database + prefix) or in-place (the live tenant).")] = Target.scratch,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="--target in-place without asking (asked on a "
                                                          "terminal, refused elsewhere).")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="With --target in-place: restore over a "
                                            "tenant whose tables hold rows, after backing it up.")] = False,
    clean: Annotated[bool, typer.Option("--clean/--keep", help="Remove the scratch target after verifying.")] = False,
    markdown: MarkdownOut = None,
    json_out: JsonFlag = False,
) -> None:
    """Restore a backup and verify it against its manifest (row counts, checksums, objects).

    The live tenant is never touched unless --target in-place is confirmed
    (--yes, or a yes on a terminal), and then only when its tables hold no rows
    (else exit 5, a conflict: nothing is recorded) or with --overwrite, which
    first backs the live tenant up (reason before-overwrite, its id in the
    report's notes). A tenant deprovisioned within its retention window is
    brought back in place with its workspaces: re-provisioned (new KMS keys),
    restored (each workspace from its own backup), verified, its data
    re-keyed, its record active again. Exit 9 when the verification
    fails, 10 when the tenant key is unusable, 13 when not confirmed."""
    from functools import partial

    from tenantctl.cli.confirm import confirmation
    from tenantctl.cli.progress import engine_progress
    from tenantctl.drills.restore import restore_backup
    from tenantctl.drills.run import drill, exit_code
    from tenantctl.errors import UsageError
    from tenantctl.models import TenantStatus

    if overwrite and target is not Target.in_place:
        raise UsageError("Option '--overwrite' goes with '--target in-place' only (a scratch target is always new).")
    markdown = _markdown_target(markdown)
    ws, record, ctx = _session(tenant_id, workspace)
    restorer = restore_backup
    removed = workspace is not None and not record.resources.kms_key_arn
    tombstone = record.status is TenantStatus.deprovisioned or removed
    who = _of(tenant_id, workspace)
    if target is Target.in_place:
        gone = "removed" if removed else "deprovisioned"
        what = (f"re-provision the {gone} {who} (new KMS key) and restore backup {backup_id} "
                "into it" if tombstone else f"restore backup {backup_id} into the live {who}")
        rows = ("its tables' rows are backed up first, then replaced (--overwrite)" if overwrite
                else "refused when its tables hold rows")
        back = (["its workspaces " + ", ".join(sorted(record.workspaces)) + ", each from its own backup taken with "
                 "the tenant's (new KMS keys)"] if tombstone and not removed and record.workspaces else [])
        confirmation(yes).check(f"drill restore --target in-place: {what}",
                                [f"the database of {who} is replaced by the backup's ({rows})",
                                 f"the backup's objects are copied back under the prefix of {who}", *back])
        yes = True
    if target is Target.in_place and tombstone:
        from tenantctl.operations.revive import revive, revive_workspace

        # A tombstone (or a removed workspace) comes back by being provisioned again.
        restorer = partial(revive_workspace if removed else revive, ws)
    with engine_progress(f"restoring {who}") as on_event:
        report = drill(ctx, record, backup_id=backup_id, target=target, yes=yes, clean=clean, kind="restore",
                       restorer=restorer, overwrite=overwrite, on_event=on_event)
    _write_markdown([report], markdown)
    if json_out:
        print_json(report)
    _show(report, json_out)
    if not report.passed:
        raise typer.Exit(exit_code([report]))


@app.command()
def run(
    tenant_id: Annotated[Optional[str], tenant_argument("Tenant to drill (or --all).")] = None,
    all_tenants: Annotated[bool, typer.Option("--all", help="Every active or suspended tenant.")] = False,
    workspace: WorkspaceOpt = None,
    backup_id: Annotated[Optional[str], typer.Option("--backup", help="Restore this backup (or 'latest') "
                                                    "instead of taking a new one.")] = None,
    max_rto: Annotated[Optional[float], typer.Option(min=0, help="Fail when the restore took longer (seconds).")
                       ] = None,
    max_rpo: Annotated[Optional[float], typer.Option(min=0, help="Fail when the newest backup is older (seconds).")
                       ] = None,
    compress: Compress = None,
    markdown: MarkdownOut = None,
    json_out: JsonFlag = False,
) -> None:
    """The full drill: back up, restore into a scratch target, verify, clean up, report.
    --all drills every active or suspended tenant and each of its workspaces (a
    hibernated one whose instance is stopped is left asleep, and said: nothing
    was written since); a drill of one hibernated tenant wakes it first.

    Exit 0 when every drill passes, 9 when any fails (mismatch, unreadable
    backup, --max-rto / --max-rpo exceeded), 10 when every failure is an
    unusable tenant key, 5 when a drill could not run (a conflict: another run
    holds the tenant's lock, named, or it is still deprovisioning; with --all a
    locked tenant is skipped, saying why, and the others still run), 3 when it
    was refused (nothing live to back up: a deprovisioned tenant, a removed
    workspace), 6 for an unknown tenant,
    workspace or backup; a drill that did not run is not recorded."""
    from tenantctl.cli.output import error
    from tenantctl.cli.progress import engine_progress
    from tenantctl.drills.compression import Compression
    from tenantctl.drills.run import SkippedDrill, drill, drill_each, drill_targets, exit_code
    from tenantctl.errors import UsageError, require_one_or_all
    from tenantctl.operations.hibernate import awake

    require_one_or_all(tenant_id, all_tenants)
    if workspace is not None and all_tenants:
        raise UsageError("Option '--workspace' cannot be used with '--all' (it names a workspace of one tenant).")
    if compress is not None and backup_id is not None:
        raise UsageError("Option '--compress' cannot be used with '--backup' (it applies to the drill's own "
                         "backup, not to one it restores).")
    compression = Compression.parse(compress)
    markdown = _markdown_target(markdown)
    from tenantctl.drills.context import context_from_workspace
    from tenantctl.drills.scope import scoped_context
    from tenantctl.workspace import Workspace

    ws = Workspace()

    def run_one(record: "TenantRecord", scope: Optional[str]) -> "DrillReport":
        with engine_progress(f"drilling {_of(record.tenant_id, scope)}") as on_event:
            if backup_id is None:  # its own backup reads the database: a hibernated one is woken first
                record = awake(ws, record, on_event)
            ctx, scoped = scoped_context(context_from_workspace(ws, record), record, scope)
            report = drill(ctx, scoped, backup_id=backup_id, max_rto=max_rto,
                           max_rpo=max_rpo, on_event=on_event, compression=compression)
        _show(report, json_out)
        return report

    if not all_tenants:  # one drill: a refusal is the command's
        report = run_one(ws.registry.require(tenant_id), workspace)
        _write_markdown([report], markdown)
        if json_out:
            print_json(report)
        if exit_code([report]):
            raise typer.Exit(exit_code([report]))
        return

    def skipped(record: "TenantRecord", why: str) -> None:
        err_console.print(f"{record.tenant_id}: skipped, {why}", markup=False, highlight=False)

    targets, asleep = drill_targets(ws.registry.iter_all(), lambda r: _stopped(ws, r))
    left_asleep = [SkippedDrill(tenant_id=r.tenant_id, reason=(
        "hibernated (its database instance is stopped, so nothing was written since; "
        f"`tenantctl drill run {r.tenant_id}` wakes and drills it)")) for r in asleep]
    for record, left in zip(asleep, left_asleep, strict=True):
        skipped(record, left.reason)
    sweep = drill_each(targets, run_one, lambda exc: error(str(exc)), skipped)
    sweep.skipped[:0] = left_asleep
    _write_markdown(sweep.drills, markdown)
    if json_out:
        print_json({**sweep.model_dump(mode="json"), "exit_code": sweep.exit_code()})
    if sweep.exit_code():
        raise typer.Exit(sweep.exit_code())


@app.command()
def history(
    tenant_id: Annotated[str, tenant_argument("Tenant whose drills and backups to list.")],
    workspace: WorkspaceOpt = None,
    limit: Annotated[int, typer.Option(min=1, help="Newest drills to show.")] = 20,
    json_out: JsonFlag = False,
) -> None:
    """List a tenant's drills and its backups, each newest first.

    Backups are listed from their clear index files, without opening anything
    under the tenant's key (so also while that key is pending deletion)."""
    from tenantctl.drills.history import list_reports
    from tenantctl.drills.store import list_backups

    _, record, ctx = _session(tenant_id, workspace)
    tenant_id = _of(tenant_id, workspace)
    reports = list_reports(ctx.s3, record, limit=limit)
    backups = list_backups(ctx.s3, record)[::-1] if record.resources else []  # newest first, as the drills
    if json_out:
        print_json({"drills": reports,
                    "backups": [b.model_dump(mode="json", include={"backup_id", "kind", "reason", "finished_at",
                                                                   "stored_bytes"}) for b in backups]})
        return
    table(f"drills of {tenant_id}", ["drill", "kind", "backup", "verdict", "RTO s", "RPO s", "finished"],
          [(r.drill_id, r.kind, r.backup_id or "", r.verdict.value,
            "" if r.rto_seconds is None else f"{r.rto_seconds:.1f}",
            "" if r.rpo_seconds is None else f"{r.rpo_seconds:.1f}", utc_second(r.finished_at))
           for r in reports])
    table(f"backups of {tenant_id}", ["backup", "kind", "reason", "finished", "stored bytes"],
          [(b.backup_id, b.kind, b.reason, utc_second(b.finished_at),
            "" if b.stored_bytes is None else b.stored_bytes) for b in backups])
