"""How often a move and a drift read the stacks: each stack's outputs and
file once per run, read again only after a step that changed the stack."""

from __future__ import annotations

from collections import Counter
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace

import pytest
from runtime_fixtures import record, with_workspaces

from tenant_runtime.models import MovePhase, TenantMove, TenantResources
from tenantctl.engines.base import ChangeSet, Op, ResourceChange, UpResult
from tenantctl.errors import ApplyFailed
from tenantctl.models import CellSpec, TenantSpec, Tier

OLD = with_workspaces(record("acme"), "legal")


def _new_side(res: TenantResources) -> TenantResources:
    """``res`` as the target stack outputs it: keys of its own, in another bucket."""
    workspaces = {n: w.model_copy(update={"kms_key_arn": w.kms_key_arn + "-k1"}) for n, w in res.workspaces.items()}
    return res.model_copy(update={"kms_key_arn": res.kms_key_arn + "-k1", "bucket": "shared-euc",
                                  "workspaces": workspaces})


class CountingEngine:
    """Stacks' outputs in memory; counts the reads per stack."""

    def __init__(self, **outputs: dict) -> None:
        self.stacks = dict(outputs)
        self.reads: Counter[str] = Counter()
        self.refreshed: list[tuple[str, bool]] = []

    def outputs(self, stack: str) -> dict:
        self.reads[stack] += 1
        return self.stacks.get(stack, {})

    def up(self, stack: str, on_event=None, refresh: bool = False) -> UpResult:
        self.stacks[stack] = _new_side(OLD.resources).model_dump(mode="json")
        return UpResult(stack=stack, outputs=self.stacks[stack], changes=ChangeSet(stack=stack))

    def destroy(self, stack: str, on_event=None) -> ChangeSet:
        self.stacks.pop(stack, None)
        return ChangeSet(stack=stack)

    def refresh(self, stack: str, on_event=None, *, absent_ok: bool = False) -> ChangeSet:
        self.refreshed.append((stack, absent_ok))
        return ChangeSet(stack=stack, changes=[ResourceChange(op=Op.same, type="t", name=f"{stack}-r")])


def _workspace(tmp_path: Path, engine: CountingEngine) -> SimpleNamespace:
    stacks = tmp_path / "stacks"
    stacks.mkdir(exist_ok=True)
    return SimpleNamespace(engine=engine, stacks_dir=stacks, project_dir=tmp_path,
                           cell_clients=lambda cell: lambda service: f"{service} of {cell}",
                           cell=lambda name: CellSpec(name=name, region="eu-central-1"),
                           registry=SimpleNamespace(save=lambda rec, **changes: rec.model_copy(update=changes)))


def _keyed(tmp_path: Path, engine: CountingEngine, phase: MovePhase):
    from tenantctl.operations.move_keyed import KeyedMover

    moving = OLD.model_copy(update={"move": TenantMove(
        from_tier=Tier.pooled, to_tier=Tier.pooled, from_cell="eu1", to_cell="euc", phase=phase,
        old_store=OLD.resources.store, to_stack="acme.k1", from_stack="acme")})
    return KeyedMover(_workspace(tmp_path, engine), SimpleNamespace(record=moving))  # type: ignore[arg-type]


BESIDE = OLD.resources.store.model_copy(update={"schema_name": "tenant_acme_k1"})  # the target's store


def test_a_keyed_move_reads_each_stacks_outputs_once_per_run(tmp_path):
    engine = CountingEngine(**{"acme": OLD.resources.model_dump(mode="json"),
                               "acme.k1": _new_side(OLD.resources).model_dump(mode="json")})
    mover = _keyed(tmp_path, engine, MovePhase.copying)
    for _ in range(3):  # what the copy, the freeze and the verification ask, over and over
        owners = mover.owners()
        prefixes = mover.prefixes(backwards=True)
        assert len(mover.schemas(BESIDE)) == len(mover.schemas(OLD.resources.store)) == 2
    assert [o.new.kms_key_arn for o in owners] == [OLD.resources.kms_key_arn + "-k1",
                                                   OLD.resources.workspaces["legal"].kms_key_arn + "-k1"]
    assert {source.bucket for source, _, _ in prefixes} == {"shared-euc"}
    assert engine.reads == {"acme": 1, "acme.k1": 1}


def test_a_step_that_builds_or_destroys_a_stack_makes_the_next_read_see_it(tmp_path):
    """A run resumed in `preparing`: the target stack has no outputs yet; the
    step that builds it makes the next reads see what it built (never the
    empty outputs from before it), and a destroy makes them see it gone."""
    engine = CountingEngine(acme=OLD.resources.model_dump(mode="json"))
    mover = _keyed(tmp_path, engine, MovePhase.preparing)
    assert mover.schemas(BESIDE) == [BESIDE]  # not built: no workspace schema there yet
    target = TenantSpec(id="acme", region="eu-central-1", cell="euc")
    mover.apply(target, stack="acme.k1")
    assert mover.record.move.stack_digests == {"acme.k1": target.content_hash()}  # `apply` takes it as the move's
    assert [o.new.kms_key_arn for o in mover.owners()][0] == OLD.resources.kms_key_arn + "-k1"
    assert len(mover.schemas(BESIDE)) == 2
    assert engine.reads == {"acme": 1, "acme.k1": 2}
    mover.destroy("acme.k1")
    assert mover.outputs("acme.k1") == {} and mover.outputs("acme.k1") == {}
    assert engine.reads == {"acme": 1, "acme.k1": 3}


def test_a_finalize_within_an_account_reads_the_stack_file_once(tmp_path, monkeypatch):
    from tenantctl.drills import backup
    from tenantctl.operations import mover, provision
    from tenantctl.transfer import store_sync

    reads: list[Path] = []
    spec = mover.target_spec(TenantSpec(id="acme"), Tier.dedicated)

    def read_tenant(path: Path) -> TenantSpec:
        reads.append(path)
        return spec

    applied: list[TenantSpec] = []
    monkeypatch.setattr(mover, "read_tenant", read_tenant)
    monkeypatch.setattr(backup, "final_backup", lambda *_a, **_k: SimpleNamespace(backup_id="b1"))
    monkeypatch.setattr(store_sync, "stop", lambda *_a: None)
    monkeypatch.setattr(mover.Mover, "leaving", lambda self, store: nullcontext(object()))  # the old database there
    monkeypatch.setattr(provision, "apply_spec", lambda _ws, s, **_k: applied.append(s) or SimpleNamespace(
        resources=OLD.resources, fingerprint="f1"))
    monkeypatch.setattr(provision, "activate", lambda _ws, rec, _s, _a: rec)
    moving = OLD.model_copy(update={"tier": Tier.dedicated, "move": TenantMove(
        from_tier=Tier.pooled, to_tier=Tier.dedicated, phase=MovePhase.switched, old_store=OLD.resources.store,
        new_store=OLD.resources.store.model_copy(update={"schema_name": "tenant_acme_s1"}))})
    ws = SimpleNamespace(stacks_dir=tmp_path, clients_for=lambda _rec: lambda service: service,
                         registry=SimpleNamespace(save=lambda rec, **changes: rec.model_copy(update=changes),
                                                  save_giving_slot=lambda rec, _c, _t, **changes: rec.model_copy(
                                                      update=changes)))
    held = SimpleNamespace(record=moving)
    mover.Mover(ws, held).finalize()  # type: ignore[arg-type]
    assert len(reads) == 1
    assert [s.retiring for s in applied] == [None] and held.record.move is None
    # The write ending the move names what was applied, not verified yet (a kill before the activation).
    assert (held.record.spec_hash, held.record.spec_digest, held.record.provision_failed) == (
        "f1", applied[0].content_hash(), True)


def test_drift_reads_each_stack_of_an_open_move_once_by_its_refresh():
    """The stack a move goes to (or leaves) is refreshed without a read of its
    outputs first; one without a state is nothing to drift, not an error."""
    from tenantctl.operations.refresh import refresh_stacks

    engine = CountingEngine()
    moving = OLD.model_copy(update={"move": TenantMove(
        from_tier=Tier.pooled, to_tier=Tier.pooled, from_cell="eu1", to_cell="euc", phase=MovePhase.copying,
        old_store=OLD.resources.store, to_stack="acme.k1", from_stack="acme")})
    changes = refresh_stacks(SimpleNamespace(engine=engine), moving)  # type: ignore[arg-type]
    assert engine.reads == {} and engine.refreshed == [("acme", False), ("acme.k1", True)]
    assert [c.name for c in changes.changes] == ["acme-r", "acme.k1-r"]


def test_the_local_engine_refreshes_a_stack_without_a_state_only_when_told_that_is_fine(tmp_path):
    from tenantctl.engines.local.engine import LocalEngine
    from tenantctl.sandbox import SandboxEndpoints

    endpoints = SandboxEndpoints(aws_endpoint_url="http://127.0.0.1:1", pg_port=1, pg_password="x",
                                 pg_bin_dir=tmp_path, state_dir=tmp_path)
    engine = LocalEngine(tmp_path, endpoints)
    assert engine.refresh("acme.k1", absent_ok=True) == ChangeSet(stack="acme.k1")
    with pytest.raises(ApplyFailed, match="no state on this sandbox"):
        engine.refresh("acme.k1")


def test_removing_from_an_unreachable_store_fails_rather_than_taking_its_database_for_gone():
    """``Mover.leaving`` skips a store only when its server says its database is gone: a server that
    cannot be reached at all (here a closed port) fails the run, so nothing is left behind unremoved."""
    import psycopg

    from tenantctl.drills.context import DrillContext
    from tenantctl.operations import mover

    store = OLD.resources.store.model_copy(update={"endpoint": "127.0.0.1", "port": 1})
    moving = OLD.model_copy(update={"move": TenantMove(from_tier=Tier.pooled, to_tier=Tier.pooled, from_cell="eu1",
                                                       to_cell="euc", phase=MovePhase.switched, old_store=store)})
    run = mover.Mover(SimpleNamespace(), SimpleNamespace(record=moving))  # type: ignore[arg-type]
    run.admins["eu1"] = DrillContext(s3=None, kms=None, admin_user="admin", admin_password="x")
    with pytest.raises(psycopg.OperationalError), run.leaving(store):
        pass
