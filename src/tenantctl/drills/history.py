"""Drill history: every drill report as JSON under
``<prefix>backups/drills/<drill-id>.json`` in the tenant's own prefix, so it
lives and dies with the tenant's backups; listed newest first."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from tenantctl.drills.models import DrillReport
from tenantctl.drills.objects import backups_prefix
from tenantctl.models import TenantRecord


class VerdictSummary(BaseModel):
    """What the HTML report shows per tenant (tenantctl.usage.html_report reads these fields)."""

    tenant_id: str
    drill: str
    verdict: str
    finished_at: datetime
    detail: str
    rto_seconds: float | None = None
    rpo_seconds: float | None = None


def drills_prefix(record: TenantRecord) -> str:
    return backups_prefix(record.resources.prefix) + "drills/"


def save_report(s3: Any, record: TenantRecord, report: DrillReport) -> str:
    key = f"{drills_prefix(record)}{report.drill_id}.json"
    s3.put_object(Bucket=record.resources.bucket, Key=key, Body=report.model_dump_json(indent=2).encode(),
                  ContentType="application/json")
    return key


def list_reports(s3: Any, record: TenantRecord, limit: int | None = None) -> list[DrillReport]:
    """Drill reports, newest first (drill ids start with their UTC timestamp)."""
    if record.resources is None:
        return []
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=record.resources.bucket,
                                                             Prefix=drills_prefix(record)):
        keys += [o["Key"] for o in page.get("Contents", []) if o["Key"].endswith(".json")]
    keys.sort(reverse=True)
    out = []
    for key in keys[:limit] if limit else keys:
        body = s3.get_object(Bucket=record.resources.bucket, Key=key)["Body"].read()
        try:
            out.append(DrillReport.model_validate_json(body))
        except ValueError:
            continue  # a foreign or damaged file is not history
    return out


def summarize(report: DrillReport) -> VerdictSummary:
    detail = "; ".join(report.reasons[:2]) if report.reasons else (
        f"{sum(c.ok for c in report.checks)} checks passed, RTO {report.rto_seconds or 0:.1f}s")
    return VerdictSummary(tenant_id=report.tenant_id, drill=f"{report.kind} ({report.backup_kind or 'no backup'})",
                          verdict=report.verdict.value, finished_at=report.finished_at, detail=detail,
                          rto_seconds=report.rto_seconds, rpo_seconds=report.rpo_seconds)


def latest_verdicts(records: Iterable[TenantRecord], s3: Any) -> dict[str, VerdictSummary]:
    """The newest drill verdict of each tenant that has one."""
    out: dict[str, VerdictSummary] = {}
    for record in records:
        if record.resources is None:
            continue
        try:
            newest = list_reports(s3, record, limit=1)
        except Exception:  # one unreadable prefix must not sink the whole report
            continue
        if newest:
            out[record.tenant_id] = summarize(newest[0])
    return out
