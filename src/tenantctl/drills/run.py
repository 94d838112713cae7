"""`drill run`: back up (or take a given backup), restore into a scratch
target, verify against the manifest, clean up, judge RTO/RPO, record history.

RTO is the measured restore time (decrypt + pg_restore + object copies, or the
snapshot restore on AWS). RPO is the age, when the drill starts, of the newest
backup that existed before it (what a disaster at that moment would lose);
with no earlier backup it is the age of the drill's own backup at restore time."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from functools import partial

from pydantic import BaseModel

from tenantctl.drills import store
from tenantctl.drills.backup import backup
from tenantctl.drills.compression import Compression, CompressionUnsupported
from tenantctl.drills.context import DrillContext
from tenantctl.drills.history import save_report
from tenantctl.drills.models import BackupManifest, DrillReport, RestoreResult, Target, Verdict
from tenantctl.drills.restore import cleanup, restore_backup
from tenantctl.drills.verify import verify
from tenantctl.engines.base import EventSink, phase
from tenantctl.errors import (
    Conflict,
    DrillFailed,
    InvalidInput,
    KeyUnusable,
    Locked,
    NotConfirmed,
    NotFound,
    QuotaExceeded,
    TenantctlError,
)
from tenantctl.models import TenantRecord, TenantStatus, utcnow
from tenantctl.naming import require_valid
from tenantctl.operations.selection import Failed, Skipped
from tenantctl.registry import refuse_held_elsewhere


def judge(report: DrillReport) -> DrillReport:
    """Fill verdict and reasons from the checks, the errors already noted and the limits."""
    reasons = list(report.reasons)
    failed = [c for c in report.checks if not c.ok]
    reasons += [f"{c.name}: expected {c.expected}, got {c.actual}" for c in failed]
    if not report.checks and not reasons:
        reasons.append("nothing was verified")
    if report.max_rto is not None and (report.rto_seconds is None or report.rto_seconds > report.max_rto):
        reasons.append(f"RTO {_secs(report.rto_seconds)} exceeds --max-rto {report.max_rto:g}s")
    if report.max_rpo is not None and (report.rpo_seconds is None or report.rpo_seconds > report.max_rpo):
        reasons.append(f"RPO {_secs(report.rpo_seconds)} exceeds --max-rpo {report.max_rpo:g}s")
    return report.model_copy(update={"reasons": reasons,
                                     "verdict": Verdict.failed if reasons else Verdict.passed})


def exit_code(reports: list[DrillReport], conflicts: int = 0) -> int:
    """0 when every drill passed; 9 when one failed its verdict; 10 when every
    failure was an unusable key; 5 when the only problem was a conflict (a
    drill that could not run)."""
    failed = [r for r in reports if not r.passed]
    if failed:
        return KeyUnusable.exit_code if all(r.key_unusable for r in failed) else DrillFailed.exit_code
    return Conflict.exit_code if conflicts else 0


def _secs(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.1f}s"


def _fill_from(report: DrillReport, manifest: BackupManifest) -> None:
    report.dump_bytes = manifest.dump.plaintext_bytes if manifest.dump else None
    report.stored_bytes = manifest.dump.stored_bytes if manifest.dump else None
    report.object_count, report.object_bytes = len(manifest.objects), manifest.object_bytes


def rpo_before(ctx: DrillContext, record: TenantRecord, at: datetime) -> float | None:
    try:
        previous = store.list_backups(ctx.s3, record)
    except Exception:
        return None
    return (at - previous[-1].finished_at).total_seconds() if previous else None


def drill_targets(records: Iterable[TenantRecord],
                  asleep: Callable[[TenantRecord], bool] = lambda record: False,
                  ) -> tuple[list[tuple[TenantRecord, str | None]], list[TenantRecord]]:
    """What `drill run --all` drills: each active or suspended tenant, then
    each of its workspaces (its own schema, prefix and key: a backup of the
    tenant does not hold them); and the hibernated tenants it leaves asleep
    (``asleep``: its database instance is stopped, so nothing was written
    since it was, and waking it every night would undo the hibernation)."""
    serving = [r for r in records if r.status in (TenantStatus.active, TenantStatus.suspended)]
    sleeping = [r for r in serving if r.store_hibernation is not None and asleep(r)]
    return [(r, name) for r in serving if r not in sleeping for name in (None, *sorted(r.workspaces))], sleeping


class SkippedDrill(Skipped):
    """A target `drill run --all` left alone (its lock another run holds, asleep), and why."""

    workspace: str | None = None


class RefusedDrill(Failed):
    """A target `drill run --all` could not drill (a conflict, or refused for its own state)."""

    workspace: str | None = None


class DrillSweep(BaseModel):
    """What `drill run --all` did: its drills, the targets it skipped and those refused (its --json)."""

    drills: list[DrillReport] = []
    skipped: list[SkippedDrill] = []
    failed: list[RefusedDrill] = []

    def exit_code(self) -> int:
        return exit_code(self.drills, len(self.failed))


def drill_each(targets: Iterable[tuple[TenantRecord, str | None]],
               run_one: Callable[[TenantRecord, str | None], DrillReport],
               on_refused: Callable[[TenantctlError], None],
               on_skipped: Callable[[TenantRecord, str], None]) -> DrillSweep:
    """`drill run --all`: ``run_one`` for each target in turn. One whose lock
    another run holds is skipped (``on_skipped``, with why: that run is the
    tenant's business, not a problem of the drills). One that could not run
    otherwise (a conflict, or refused for its own state: deprovisioned since the
    listing, say) goes to ``on_refused`` and is counted, and the others still
    run; a compression the tools lack would refuse every one: raised at once."""
    sweep = DrillSweep()
    for record, scope in targets:
        try:
            sweep.drills.append(run_one(record, scope))
        except CompressionUnsupported:
            raise
        except Locked as exc:
            sweep.skipped.append(SkippedDrill(tenant_id=record.tenant_id, workspace=scope, reason=str(exc)))
            on_skipped(record, str(exc))
        except (Conflict, InvalidInput) as exc:
            sweep.failed.append(RefusedDrill.of(record.tenant_id, exc).model_copy(update={"workspace": scope}))
            on_refused(exc)
    return sweep


def drill(ctx: DrillContext, record: TenantRecord, *, backup_id: str | None = None,
          target: Target = Target.scratch, yes: bool = False, clean: bool = True,
          max_rto: float | None = None, max_rpo: float | None = None, kind: str = "run",
          restorer: Callable[..., RestoreResult] = restore_backup, overwrite: bool = False,
          on_event: EventSink | None = None, compression: Compression | None = None) -> DrillReport:
    """One drill; failures become a fail verdict with the reason, never an exception,
    except NotFound (an unknown backup id), Conflict (a target that holds rows,
    a tenant locked or mid-operation), InvalidInput (nothing live to back up,
    a retention window over, a key not the workspace's, a compression the tools
    lack) and QuotaExceeded (a tombstone's cell has no slot for it to come back
    into): the drill did not run, so it is not recorded. ``restorer(ctx, record, index, target=, yes=, overwrite=)``
    restores the backup ``index`` names (the restorer opens its manifest:
    ``restore_backup``, or a revive for a tombstone, whose key must be revived
    first) and returns the result with that manifest. ``on_event``: each phase
    (backup, restore, verify, cleanup) as it starts. ``compression``: the new
    backup's."""
    require_valid(record.tenant_id)
    if (backup_id is not None and ctx.registry is not None and record.resources is not None
            and (target is Target.scratch or record.status is TenantStatus.deprovisioned)):
        # Refused, not a failed drill: another run (an in-place restore, a deprovision) may be changing
        # what it would read, or a tombstone is being brought back; before the revive's own checks. A
        # fresh backup refuses the same way itself (one registry read, not two); a live tenant's restore
        # in place takes the lock, which refuses too.
        refuse_held_elsewhere(ctx.registry.require(record.tenant_id))
    started = utcnow()
    step = partial(phase, on_event, record.tenant_id)
    report = DrillReport(drill_id=store.new_id(started), tenant_id=record.tenant_id, tier=record.tier.value,
                         kind=kind, workspace=ctx.scope, target=target.value, started_at=started, finished_at=started,
                         max_rto=max_rto, max_rpo=max_rpo, verdict=Verdict.failed)
    rpo = rpo_before(ctx, record, started) if record.resources else None
    if rpo is not None:
        report.rpo_seconds, report.rpo_basis = rpo, "newest backup before the drill"
    result: RestoreResult | None = None
    try:
        if record.resources is None:
            raise TenantctlError(f"tenant {record.tenant_id!r} has no resources recorded")
        if backup_id == "latest":
            step("reading the latest backup")
            index = store.latest_backup(ctx.s3, record, ctx.scope)
        elif backup_id:
            step(f"reading backup {backup_id}")
            index = store.backup_index(ctx.s3, record, backup_id)
        else:  # a fresh backup unless one is named (its progress line once it is not refused)
            index = store.backup_index(ctx.s3, record,
                                       backup(ctx, record, compression=compression, on_event=on_event).backup_id)
        report.backup_id, report.backup_kind = index.backup_id, index.kind
        if report.rpo_seconds is None:
            report.rpo_seconds = (utcnow() - index.finished_at).total_seconds()
            report.rpo_basis = "the drill's own backup (no earlier backup)" if not backup_id else "the restored backup"
        step(f"restoring backup {index.backup_id} ({target.value})")
        result = restorer(ctx, record, index, target=target, yes=yes, overwrite=overwrite)
        manifest = result.manifest
        _fill_from(report, manifest)
        report.rto_seconds = result.seconds
        if result.target is Target.scratch:
            report.scratch = (f"{result.scratch_instance or result.database} + "
                              f"s3://{record.resources.bucket}/{result.object_prefix}")
        report.notes = list(result.notes)
        step("verifying the restore against the backup's manifest")
        report.checks = result.checks if result.checks is not None else verify(ctx, record, manifest, result)
        if result.target is Target.in_place and ctx.workspace is not None:
            # After the verification (it compares the restored search key too): a backup of the
            # earlier index layout is searchable once reindexed, under a new key.
            from tenantctl.operations.reindex import rebuild_unindexed, rebuilding

            restored = ctx.workspace.registry.require(record.tenant_id)  # a revive gave it new resources
            for name, done in rebuild_unindexed(ctx.workspace, restored, lambda workspace, items: step(
                    rebuilding(workspace, items, "the backup did not index")))[1].items():
                report.notes.append(f"search index of {f'workspace {name}' if name else 'the tenant'} rebuilt "
                                    f"(the backup was of the earlier layout): {done.documents} documents, "
                                    f"{done.summaries} summaries under search key {done.key_version}")
    # Refused, not run: no failed drill in history (QuotaExceeded: a tombstone's cell, full or draining,
    # takes it back into no slot; placement says so before anything changes).
    except (NotFound, Conflict, NotConfirmed, InvalidInput, QuotaExceeded):
        raise
    except TenantctlError as exc:
        report.key_unusable = isinstance(exc, KeyUnusable)
        report.reasons.append(str(exc))
        report.notes += getattr(exc, "__notes__", [])  # what happened on the way (a backup taken first)
    except Exception as exc:  # a drill that cannot verify fails, with the cause
        report.reasons.append(f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}")
        report.notes += getattr(exc, "__notes__", [])
    finally:
        if result is not None and clean and result.target is Target.scratch:
            step("removing the scratch target")
            try:
                report.checks = report.checks + cleanup(ctx, record, result)
                report.cleaned_up = True
            except Exception as exc:
                report.reasons.append(f"cleanup of {result.database} failed: {exc}")
    report.finished_at = utcnow()
    report = judge(report)
    if record.resources is not None:
        try:
            save_report(ctx.s3, record, report)
        except Exception as exc:  # the verdict stands; history is best effort
            report.reasons.append(f"drill history not saved: {exc}")
    return report
