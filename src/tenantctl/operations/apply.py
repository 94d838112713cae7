"""Reconcile the committed stacks/ directory with the registry (GitOps).

Each tenant is planned from one registry read: unchanged when its record is
active and carries the fingerprint of the same spec + program, otherwise created
or updated. Work runs in a bounded process pool (the LocalEngine drives Pulumi's
process-global runtime, so tenants can't share a process), one failure never
stops the others, and `--shard I/N` splits tenants deterministically by a hash
of their id so CI runners get disjoint sets that cover everything.
"""

from __future__ import annotations

import hashlib
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from enum import Enum
from multiprocessing import get_context
from pathlib import Path
from typing import Callable

from pydantic import BaseModel, Field

from tenantctl.errors import InvalidInput, TenantctlError
from tenantctl.fingerprint import applied_hash
from tenantctl.models import TenantRecord, TenantStatus
from tenantctl.stackconfig import read_tenant, tenant_stack_files
from tenantctl.workspace import Workspace


class Action(str, Enum):
    create = "create"
    update = "update"
    unchanged = "unchanged"
    orphan = "orphan"  # in the registry, not in stacks/: reported, removed only with --prune --yes
    prune = "prune"
    invalid = "invalid"


class TenantResult(BaseModel):
    tenant_id: str
    action: Action
    ok: bool = True
    error: str | None = None
    changes: dict[str, int] = Field(default_factory=dict)
    seconds: float = 0.0


class ApplySummary(BaseModel):
    preview: bool
    shard: str
    seconds: float
    results: list[TenantResult]

    def count(self, action: Action) -> int:
        return sum(1 for r in self.results if r.action is action)

    @property
    def failed(self) -> list[TenantResult]:
        return [r for r in self.results if not r.ok]

    @property
    def pending(self) -> list[TenantResult]:
        return [r for r in self.results if r.action in (Action.create, Action.update, Action.prune)]

    def exit_code(self) -> int:
        """apply: 0 ok / 1 a tenant failed; preview: 0 nothing to do / 2 changes pending / 1 error."""
        if self.failed:
            return 1
        if self.preview and self.pending:
            return 2
        return 0


def parse_shard(text: str | None) -> tuple[int, int]:
    if not text:
        return 1, 1
    try:
        index, total = (int(p) for p in text.split("/"))
    except ValueError:
        raise InvalidInput(f"--shard {text!r}: expected I/N, e.g. 2/4") from None
    if not 1 <= index <= total:
        raise InvalidInput(f"--shard {text!r}: I must be between 1 and N")
    return index, total


def in_shard(tenant_id: str, index: int, total: int) -> bool:
    bucket = int.from_bytes(hashlib.sha256(tenant_id.encode()).digest()[:8], "big") % total
    return bucket == index - 1


def plan(ws: Workspace, shard: tuple[int, int], records: dict[str, TenantRecord]) -> list[TenantResult]:
    index, total = shard
    results: list[TenantResult] = []
    files = {t: p for t, p in tenant_stack_files(ws.stacks_dir).items() if in_shard(t, index, total)}
    for tenant_id, path in files.items():
        try:
            spec = read_tenant(path)
        except TenantctlError as exc:
            results.append(TenantResult(tenant_id=tenant_id, action=Action.invalid, ok=False, error=str(exc)))
            continue
        record = records.get(tenant_id)
        if record is None:
            action = Action.create
        elif record.status is TenantStatus.active and record.spec_hash == applied_hash(spec, ws.project_dir):
            action = Action.unchanged
        else:
            action = Action.update
        results.append(TenantResult(tenant_id=tenant_id, action=action))
    for tenant_id, record in records.items():
        live = record.status not in (TenantStatus.deprovisioned, TenantStatus.deprovisioning)
        if tenant_id not in files and live and in_shard(tenant_id, index, total):
            results.append(TenantResult(tenant_id=tenant_id, action=Action.orphan))
    return sorted(results, key=lambda r: r.tenant_id)


def _run_one(project_dir: str, cwd: str, tenant_id: str, action: str, preview: bool) -> TenantResult:
    """One tenant's work, in a worker process (module-level so it pickles)."""
    from tenantctl.operations.deprovision import deprovision
    from tenantctl.operations.provision import provision

    started = time.monotonic()
    result = TenantResult(tenant_id=tenant_id, action=Action(action))
    try:
        ws = Workspace(project_dir=Path(project_dir), cwd=Path(cwd))
        if preview:
            if result.action is not Action.prune:
                result.changes = ws.engine.preview(tenant_id).summary()
        elif result.action is Action.prune:
            _, changes, _ = deprovision(ws, tenant_id)
            result.changes = changes.summary()
        else:
            _, up = provision(ws, read_tenant(ws.stacks_dir / f"Pulumi.{tenant_id}.yaml"))
            result.changes = up.changes.summary()
    except TenantctlError as exc:
        result.ok, result.error = False, str(exc)
    except Exception as exc:  # one tenant's failure never stops the others
        result.ok, result.error = False, f"{type(exc).__name__}: {exc}"
    result.seconds = round(time.monotonic() - started, 3)
    return result


def apply(
    ws: Workspace,
    *,
    preview: bool = False,
    prune: bool = False,
    parallel: int = 4,
    shard: str | None = None,
    on_result: Callable[[TenantResult], None] | None = None,
) -> ApplySummary:
    if parallel < 1:
        raise InvalidInput("--parallel must be at least 1")
    started = time.monotonic()
    index, total = parse_shard(shard)
    ws.platform_outputs()
    records = {r.tenant_id: r for r in ws.registry.iter_all()}
    results = plan(ws, (index, total), records)
    if prune:
        results = [r.model_copy(update={"action": Action.prune}) if r.action is Action.orphan else r for r in results]
    todo = [r for r in results if r.action in (Action.create, Action.update, Action.prune)]
    done: dict[str, TenantResult] = {}
    args = (str(ws.project_dir), str(ws.cwd))
    if parallel == 1 or len(todo) <= 1:
        for r in todo:
            done[r.tenant_id] = _run_one(*args, r.tenant_id, r.action.value, preview)
            if on_result:
                on_result(done[r.tenant_id])
    else:
        # spawn, not fork: the parent may hold gRPC/boto3 threads that fork would break.
        with ProcessPoolExecutor(max_workers=min(parallel, len(todo)), mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(_run_one, *args, r.tenant_id, r.action.value, preview) for r in todo]
            for future in as_completed(futures):
                res = future.result()
                done[res.tenant_id] = res
                if on_result:
                    on_result(res)
    merged = [done.get(r.tenant_id, r) for r in results]
    return ApplySummary(preview=preview, shard=f"{index}/{total}", seconds=round(time.monotonic() - started, 3),
                        results=merged)
