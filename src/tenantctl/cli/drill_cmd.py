"""`tenantctl drill backup | restore | run | history`: verified backups and restores."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from tenantctl.cli.options import JsonFlag
from tenantctl.cli.output import console, print_json, table
from tenantctl.drills.models import Target

if TYPE_CHECKING:
    from tenantctl.drills.models import DrillReport

app = typer.Typer(name="drill", no_args_is_help=True,
                  help="Backup / restore drills: encrypted per-tenant backups, verified restores, RTO/RPO.")


MarkdownOut = Annotated[Optional[Path], typer.Option("--markdown", help="Also write the markdown report here "
                                                     "(a directory: one <tenant>-<drill>.md per drill).")]



def _session():
    from tenantctl.drills.context import context_from_workspace
    from tenantctl.workspace import Workspace

    ws = Workspace()
    return ws, context_from_workspace(ws)


def _show(report: DrillReport, markdown: Optional[Path], json_out: bool) -> None:
    from tenantctl.drills.report import render_markdown

    text = render_markdown(report)
    if markdown is not None:
        path = markdown / f"{report.tenant_id}-{report.drill_id}.md" if markdown.is_dir() else markdown
        path.write_text(text)
    if json_out:
        return
    colour = "green" if report.passed else "red"
    console.print(f"[{colour}]drill {report.drill_id} of {report.tenant_id}: {report.verdict.value.upper()}[/] "
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
    tenant_id: Annotated[str, typer.Argument(help="Tenant to back up.")],
    json_out: JsonFlag = False,
) -> None:
    """Back up a tenant's database and object manifest, encrypted with the tenant key.

    Pooled: pg_dump of its schema; dedicated: an RDS snapshot (a logical dump on
    the sandbox). The manifest (row counts, checksums, objects, registry record)
    goes to <prefix>backups/<backup-id>/ next to the encrypted dump."""
    from tenantctl.cli.progress import engine_progress
    from tenantctl.drills.backup import backup as run
    from tenantctl.engines.base import phase

    ws, ctx = _session()
    record = ws.registry.require(tenant_id)
    with engine_progress(f"backing up {tenant_id}") as on_event:
        phase(on_event, tenant_id, "dumping, encrypting and uploading")
        manifest = run(ctx, record)
    if json_out:
        print_json(manifest.model_dump(mode="json", exclude={"record"}))
        return
    size = f"{manifest.dump.plaintext_bytes} bytes dumped, {manifest.dump.stored_bytes} stored" if manifest.dump \
        else f"snapshot {manifest.snapshot.identifier}"
    console.print(f"[green]backup {manifest.backup_id}[/] of {tenant_id} ({manifest.kind}): {size}; "
                  f"{len(manifest.objects)} objects in the manifest")
    table("tables", ["table", "rows", "checksum"], [(n, t.rows, t.checksum) for n, t in manifest.tables.items()])


@app.command()
def restore(
    tenant_id: Annotated[str, typer.Argument(help="Tenant whose backup to restore.")],
    backup_id: Annotated[str, typer.Option("--backup", help="Backup id, or 'latest'.")] = "latest",
    target: Annotated[Target, typer.Option(
        help="scratch (a new database + prefix) or in-place (the live tenant).")] = Target.scratch,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="--target in-place without asking (asked on a "
                                                          "terminal, refused elsewhere).")] = False,
    clean: Annotated[bool, typer.Option("--clean/--keep", help="Remove the scratch target after verifying.")] = False,
    markdown: MarkdownOut = None,
    json_out: JsonFlag = False,
) -> None:
    """Restore a backup and verify it against its manifest (row counts, checksums, objects).

    The live tenant is never touched unless --target in-place is confirmed
    (--yes, or a yes on a terminal), and then only when its tables hold no rows. A tenant deprovisioned within its
    retention window is brought back that way: re-provisioned (new KMS key),
    restored, verified, its data re-keyed, its record active again.
    Exit 9 when the verification fails, 10 when the tenant key is unusable."""
    from functools import partial

    from tenantctl.cli.confirm import confirmation
    from tenantctl.cli.progress import engine_progress
    from tenantctl.drills.restore import restore as restore_backup
    from tenantctl.drills.run import drill
    from tenantctl.errors import DrillFailed, KeyUnusable
    from tenantctl.models import TenantStatus

    ws, ctx = _session()
    record = ws.registry.require(tenant_id)
    restorer = restore_backup
    tombstone = record.status is TenantStatus.deprovisioned
    if target is Target.in_place:
        what = (f"re-provision the deprovisioned tenant {tenant_id} (new KMS key) and restore backup {backup_id} "
                "into it" if tombstone else f"restore backup {backup_id} into the live tenant {tenant_id}")
        confirmation(yes).check(f"drill restore --target in-place: {what}",
                                [f"the database of {tenant_id} is replaced by the backup's (refused when its tables "
                                 "hold rows)", "the backup's objects are copied back under the tenant's prefix"])
        yes = True
    if target is Target.in_place and tombstone:
        from tenantctl.operations.revive import revive

        restorer = partial(revive, ws)  # a tombstone comes back by being provisioned again
    with engine_progress(f"restoring {tenant_id}") as on_event:
        report = drill(ctx, record, backup_id=backup_id, target=target, yes=yes, clean=clean, kind="restore",
                       restorer=restorer, on_event=on_event)
    if json_out:
        print_json(report)
    _show(report, markdown, json_out)
    if not report.passed:
        raise typer.Exit(KeyUnusable.exit_code if report.key_unusable else DrillFailed.exit_code)


@app.command()
def run(
    tenant_id: Annotated[Optional[str], typer.Argument(help="Tenant to drill (or --all).")] = None,
    all_tenants: Annotated[bool, typer.Option("--all", help="Every active or suspended tenant.")] = False,
    backup_id: Annotated[Optional[str], typer.Option("--backup", help="Restore this backup (or 'latest') "
                                                    "instead of taking a new one.")] = None,
    max_rto: Annotated[Optional[float], typer.Option(help="Fail when the restore took longer (seconds).")] = None,
    max_rpo: Annotated[Optional[float], typer.Option(help="Fail when the newest backup is older (seconds).")] = None,
    markdown: MarkdownOut = None,
    json_out: JsonFlag = False,
) -> None:
    """The full drill: back up, restore into a scratch target, verify, clean up, report.

    Exit 0 when every drill passes, 9 when any fails (mismatch, unreadable
    backup, unusable key, or --max-rto / --max-rpo exceeded)."""
    from tenantctl.cli.progress import engine_progress
    from tenantctl.drills.run import drill
    from tenantctl.errors import DrillFailed, InvalidInput
    from tenantctl.models import TenantStatus

    if bool(tenant_id) == all_tenants:
        raise InvalidInput("give one tenant id or --all")
    ws, ctx = _session()
    if all_tenants:
        records = [r for r in ws.registry.iter_all() if r.status in (TenantStatus.active, TenantStatus.suspended)]
    else:
        records = [ws.registry.require(tenant_id)]
    reports = []
    for record in records:
        with engine_progress(f"drilling {record.tenant_id}") as on_event:
            report = drill(ctx, record, backup_id=backup_id, max_rto=max_rto, max_rpo=max_rpo, on_event=on_event)
        reports.append(report)
        _show(report, markdown, json_out)
    if json_out:
        print_json(reports if all_tenants else reports[0])
    if any(not r.passed for r in reports):
        raise typer.Exit(DrillFailed.exit_code)


@app.command()
def history(
    tenant_id: Annotated[str, typer.Argument(help="Tenant whose drills and backups to list.")],
    limit: Annotated[int, typer.Option(help="Newest drills to show.")] = 20,
    json_out: JsonFlag = False,
) -> None:
    """List a tenant's drills (newest first) and its backups."""
    from tenantctl.drills.history import list_reports
    from tenantctl.drills.store import list_manifests

    ws, ctx = _session()
    record = ws.registry.require(tenant_id)
    reports = list_reports(ctx.s3, record, limit=limit)
    backups = list_manifests(ctx.s3, record) if record.resources else []
    if json_out:
        print_json({"drills": reports,
                    "backups": [m.model_dump(mode="json", include={"backup_id", "kind", "reason", "finished_at"})
                                for m in backups]})
        return
    table(f"drills of {tenant_id}", ["drill", "kind", "backup", "verdict", "RTO s", "RPO s", "finished"],
          [(r.drill_id, r.kind, r.backup_id or "", r.verdict.value,
            "" if r.rto_seconds is None else f"{r.rto_seconds:.1f}",
            "" if r.rpo_seconds is None else f"{r.rpo_seconds:.1f}", f"{r.finished_at:%Y-%m-%d %H:%M:%S}")
           for r in reports])
    table(f"backups of {tenant_id}", ["backup", "kind", "reason", "finished", "dump bytes", "objects"],
          [(m.backup_id, m.kind, m.reason, f"{m.finished_at:%Y-%m-%d %H:%M:%S}",
            m.dump.plaintext_bytes if m.dump else "", len(m.objects)) for m in reversed(backups)])
