"""Fault injection (tests/faults) and the shared retry policy. The behaviour
against a server is in tests/integration (test_faults_cli, test_throttling,
test_fault_free_package); here: parsing, validation, where the seams the faults
are armed at die, that the shipped package holds no fault path, the retry budgets."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import pytest
from faults import (
    FAULT_AFTER_ENV,
    FAULT_POINT_ENV,
    FAULT_THROTTLE_ENV,
    FAULT_THROTTLE_FILE_ENV,
    STEPS,
    Faults,
    SharedTokenBucket,
    arm,
    parse_throttle,
)

from tenantctl import aws

ROOT = Path(__file__).resolve().parents[2]


def test_fault_after_takes_a_write_count_or_a_named_step():
    assert (Faults({"TENANTCTL_FAULT_AFTER": "3"}).after, Faults({"TENANTCTL_FAULT_AFTER": "3"}).step) == (3, None)
    named = Faults({"TENANTCTL_FAULT_AFTER": "provision:reserved"})
    assert (named.after, named.step) == (None, "provision:reserved")
    assert set(STEPS) >= {"provision:reserved", "provision:applied", "deprovision:marked", "deprovision:destroyed",
                          "move:copying", "move:freezing", "move:switched", "move:cleared"}
    with pytest.raises(ValueError, match="provision:reserved"):
        Faults({"TENANTCTL_FAULT_AFTER": "provision:typo"})
    with pytest.raises(ValueError, match="TENANTCTL_FAULT_POINT"):
        Faults({"TENANTCTL_FAULT_POINT": "sometimes"})
    unset = Faults({})
    unset.reached("provision:applied")  # no fault configured: nothing happens
    unset.applied()
    unset.recorded()


def test_throttle_rules_parse():
    assert parse_throttle("2") == {"kms.CreateKey": 2.0}
    assert parse_throttle("kms.CreateKey=0.5, dynamodb.*=40") == {"kms.CreateKey": 0.5, "dynamodb.*": 40.0}
    with pytest.raises(ValueError, match="service.Operation"):
        parse_throttle("CreateKey=1")
    with pytest.raises(ValueError, match="> 0"):
        parse_throttle("kms.CreateKey=0")


def test_shared_token_bucket_allows_the_burst_then_throttles(tmp_path):
    bucket = SharedTokenBucket(tmp_path / "t.json")
    taken = [bucket.take("kms.CreateKey", 2.0) for _ in range(5)]
    assert taken[:2] == [True, True] and not all(taken)
    counts = bucket.counts()["kms.CreateKey"]
    assert counts["allowed"] + counts["throttled"] == 5 and counts["throttled"] >= 2
    # Another "process" (a second handle on the same file) draws from the same bucket.
    assert SharedTokenBucket(tmp_path / "t.json").counts() == bucket.counts()


def test_a_spent_bucket_throttles_its_first_call_however_late_then_refills(tmp_path):
    bucket = SharedTokenBucket(tmp_path / "t.json")
    bucket.spend("kms.CreateKey", 1)
    time.sleep(0.2)  # the debt starts with the first call, not with spend()
    assert bucket.take("kms.CreateKey", 20.0) is False
    time.sleep(0.15)  # 2 tokens at 20/s: back to one
    assert bucket.take("kms.CreateKey", 20.0) is True
    assert bucket.counts()["kms.CreateKey"] == {"allowed": 1, "throttled": 1}


def test_retry_budgets_throttling_longest(monkeypatch):
    assert aws.retry_budgets() == (aws.THROTTLE_ATTEMPTS, aws.TRANSIENT_ATTEMPTS)
    assert aws.THROTTLE_ATTEMPTS > aws.TRANSIENT_ATTEMPTS >= 3
    monkeypatch.setenv(aws.THROTTLE_ATTEMPTS_ENV, "2")
    assert aws.retry_budgets() == (2, 2)  # transient never exceeds the throttling budget
    monkeypatch.setenv(aws.THROTTLE_ATTEMPTS_ENV, "0")
    with pytest.raises(ValueError, match="between 1 and 50"):
        aws.retry_budgets()


def test_every_client_gets_the_replaced_retry_handler(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    client = aws.client("kms", region="us-east-1")
    assert client.meta.config.retries == {"mode": "standard", "total_max_attempts": aws.THROTTLE_ATTEMPTS}
    # The needs-retry handler registered under botocore's unique id is ours.
    registered = client.meta.events._emitter._unique_id_handlers  # noqa: SLF001
    handler = registered["retry-config-kms"]["handler"]
    assert type(handler.__self__._retry_policy._retry_checker).__name__ == "_Conditions"  # noqa: SLF001


def test_provisioning_code_makes_clients_only_through_the_shared_helper():
    """LocalEngine handlers, registry writer, operations (deprovision purge),
    preflight and the dynamic providers: every boto3 client comes from
    tenantctl.aws.client, so every one of them has the same bounded backoff."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    paths = [*(root / "src/tenantctl/engines/local").rglob("*.py"), root / "src/tenantctl/registry.py",
             *(root / "src/tenantctl/operations").glob("*.py"), root / "src/tenantctl/preflight.py",
             *(root / "infra").rglob("*.py")]
    direct = re.compile(r"\bboto3\.(client|resource)\(|\bsession\.(client|resource)\(")
    offenders = [f"{p.relative_to(root)}:{n}" for p in paths
                 for n, line in enumerate(p.read_text().splitlines(), 1) if direct.search(line)]
    assert offenders == []


# -- the seams the faults are armed at ------------------------------------------------

class Killed(BaseException):
    """Not an Exception: like ``os._exit``, no ``except Exception`` of the package catches it."""


class Dying(Faults):
    """Raises where the armed process would exit, so the test sees where."""

    def die(self, where: str) -> None:
        raise Killed(where)


@contextmanager
def armed(env: dict[str, str]) -> Iterator[Dying]:
    faults = Dying(env)
    disarm = arm(env, faults)
    try:
        yield faults
    finally:
        disarm()


QUEUE = "aws:sqs/queue:Queue"
WRITES = 4  # create a, create b, update a, delete b


@pytest.fixture
def queue_handler(monkeypatch):
    """The real SQS queue handler (create/update/delete protocol), its sandbox calls stubbed."""
    from tenantctl.engines.local.handlers import HANDLERS

    handler = HANDLERS[QUEUE]
    monkeypatch.setattr(handler, "find", lambda ctx, d: None)
    monkeypatch.setattr(handler, "make", lambda ctx, d: f"url-{d.name}")
    monkeypatch.setattr(handler, "configure", lambda ctx, rid, d, olds: {"url": rid})
    monkeypatch.setattr(handler, "remove", lambda ctx, rid, d: None)
    return handler


def urn(name: str) -> str:
    return f"urn:pulumi:s::p::{QUEUE}::{name}"


def apply_four_writes(tmp_path: Path, handler: Any):
    """What an ApplyPass and a destroy do: intent + create (twice), an update, deleting mark + delete."""
    from tenantctl.engines.local.passes import ApplyPass, delete_resource
    from tenantctl.engines.local.state import StackState, StateFile

    file = StateFile(tmp_path, "s")
    run = ApplyPass("s", StackState(stack="s"), None, None, file)
    run.resource(urn("a"), QUEUE, "a", {"name": "a"})
    run.resource(urn("b"), QUEUE, "b", {"name": "b"})
    run.resource(urn("a"), QUEUE, "a", {"name": "a", "delaySeconds": 5})
    delete_resource(run, handler, run.state.get(urn("b")))
    file.save(run.state)  # the end of the run
    return file


# The state file as the kill at each write leaves it: (name, status, delaySeconds) per entry. What a call
# returned reaches the file with the next intent or mark (or the run's end): until then the file holds the
# intent, which is what a re-run needs to adopt the resource.
UNRECORDED = [[("a", "creating", None)], [("a", "created", None), ("b", "creating", None)],
              [("a", "created", None), ("b", "creating", None)], [("a", "created", 5), ("b", "deleting", None)]]
RECORDED = [[("a", "created", None), ("b", "creating", None)], [("a", "created", 5), ("b", "deleting", None)],
            [("a", "created", 5), ("b", "deleting", None)], [("a", "created", 5)], [("a", "created", 5)]]


@pytest.mark.parametrize("point", ["unrecorded", "recorded"])
@pytest.mark.parametrize("after", range(1, WRITES + 2))
def test_resource_writes_die_between_the_sandbox_call_and_the_state_record_or_after_it(
        tmp_path, queue_handler, point: str, after: int):
    from tenantctl.engines.local.state import StateFile

    def saved() -> list[tuple[str, str, Any]]:
        state = StateFile(tmp_path, "s").load()
        return [(r.name, r.status, r.inputs.get("delaySeconds")) for r in state.resources]

    with armed({FAULT_AFTER_ENV: str(after), FAULT_POINT_ENV: point}):
        if after > WRITES:  # past the last write: nothing dies
            apply_four_writes(tmp_path, queue_handler)
            assert saved() == RECORDED[-1]
            return
        with pytest.raises(Killed, match=f"resource write {after} \\({point}\\)"):
            apply_four_writes(tmp_path, queue_handler)
    # The intent saved before a create and the mark saved before a delete are not writes (they record earlier ones).
    assert saved() == (UNRECORDED if point == "unrecorded" else RECORDED)[after - 1]


def test_disarmed_the_seams_are_the_package_s_own(tmp_path, queue_handler):
    from tenantctl.engines.local.handlers import HANDLERS
    from tenantctl.engines.local.state import StateFile
    from tenantctl.registry import RegistryWriter

    originals = {"save": StateFile.save, "acquire": RegistryWriter.acquire, "create": queue_handler.create,
                 "kms": HANDLERS["aws:kms/key:Key"].create}
    with armed({FAULT_AFTER_ENV: "1"}):
        assert queue_handler.create != originals["create"] and StateFile.save is not originals["save"]
    with armed({FAULT_AFTER_ENV: "provision:reserved"}):
        assert RegistryWriter.acquire is not originals["acquire"]
    assert {"save": StateFile.save, "acquire": RegistryWriter.acquire, "create": queue_handler.create,
            "kms": HANDLERS["aws:kms/key:Key"].create} == originals
    assert "create" not in vars(HANDLERS["aws:kms/key:Key"])


class MemoryRegistry:
    """A RegistryWriter whose table is a dict; ``log`` lists each written status."""

    @staticmethod
    def make():
        from tenantctl.registry import RegistryWriter

        class Memory(RegistryWriter):
            def __init__(self) -> None:
                super().__init__("registry", client=object())
                self.items: dict[str, Any] = {}
                self.log: list[str] = []

            def get(self, tenant_id: str):
                return self.items.get(tenant_id)

            def _put(self, record, expected_version):
                new = record.model_copy(update={"version": (expected_version or 0) + 1})
                self.items[record.tenant_id] = new
                self.log.append(new.status.value)
                return new

            def put_giving_slot(self, record, expected_version, cell, tier, *, conflict):
                return self._put(record, expected_version)  # no cell counters here: the record alone

            def _transact(self, counter, write, conflict):  # a withdrawal's delete; no cell counters here
                [(kind, args)] = write.items()
                assert kind == "Delete"
                self.items.pop(args["Key"]["tenant_id"]["S"])
                self.log.append("withdrawn")
                return True

        return Memory()


def provision_then_deprovision(writer: Any) -> None:
    """The registry calls of provision, a drill's lock, and deprovision, in order."""
    from tenantctl.models import TenantSpec, TenantStatus

    spec = TenantSpec(id="acme")
    record = writer.acquire(spec, operation="provision")
    writer.mark_active(record, record.resources, spec, program_version="0", applied_hash="h")
    writer.release(writer.lock_for("acme", "drill-restore"))  # a lock without a status: no step
    record = writer.lock_for("acme", "deprovision", status=TenantStatus.deprovisioning)
    writer.mark_deprovisioned(record, 14)


ACTIVE = ["provisioning", "active", "active", "active"]
WRITTEN_AT = {"provision:reserving": [], "provision:reserved": ["provisioning"], "provision:applied": ["provisioning"],
              "deprovision:marked": ACTIVE + ["deprovisioning"], "deprovision:destroyed": ACTIVE + ["deprovisioning"],
              "deprovision:tombstoned": ACTIVE + ["deprovisioning", "deprovisioned"]}


@pytest.mark.parametrize("step", [s for s in STEPS if s.split(":")[0] in ("provision", "deprovision")
                                  and s != "provision:withdrawn"])
def test_registry_steps_die_after_the_reservation_and_mark_before_the_final_writes(step: str):
    writer = MemoryRegistry.make()
    with armed({FAULT_AFTER_ENV: step}), pytest.raises(Killed, match=f"step {step}"):
        provision_then_deprovision(writer)
    assert writer.log == WRITTEN_AT[step]
    unarmed = MemoryRegistry.make()
    provision_then_deprovision(unarmed)
    assert unarmed.log == ACTIVE + ["deprovisioning", "deprovisioned"]


def test_the_withdrawal_step_dies_once_a_refused_reservation_is_withdrawn():
    from tenantctl.models import TenantSpec

    writer = MemoryRegistry.make()
    record = writer.acquire(TenantSpec(id="acme"), operation="provision")
    with armed({FAULT_AFTER_ENV: "provision:withdrawn"}):
        assert not writer.withdraw(writer.save(record))  # moved on (version 2): kept, not this step
        with pytest.raises(Killed, match="step provision:withdrawn"):
            writer.withdraw(record)
    assert writer.log[-1] == "withdrawn" and writer.get("acme") is None  # withdrawn, then killed


def test_move_steps_die_right_after_the_phase_is_written():
    from tenant_runtime.models import MovePhase, StoreConnection, TenantMove
    from tenantctl.models import TenantSpec

    writer = MemoryRegistry.make()
    record = writer.acquire(TenantSpec(id="acme"), operation="move")
    store = StoreConnection(endpoint="h", database="d", schema_name="s", role="r", secret_arn="arn")
    move = TenantMove(from_tier="pooled", to_tier="dedicated", old_store=store)
    with armed({FAULT_AFTER_ENV: "move:freezing"}):
        record = writer.save(record, move=move.model_copy(update={"phase": MovePhase.copying}))
        with pytest.raises(Killed, match="step move:freezing"):
            writer.save(record, move=move.model_copy(update={"phase": MovePhase.freezing}))
    assert writer.get("acme").move.phase is MovePhase.freezing  # written, then killed


def test_the_workspace_step_dies_after_a_workspaces_final_backup_only(monkeypatch):
    from tenantctl.drills import backup

    taken = []
    monkeypatch.setattr(backup, "final_backup", lambda ws, record, workspace=None: taken.append(workspace))
    with armed({FAULT_AFTER_ENV: "workspace:backed-up"}):
        backup.final_backup(None, None)  # the tenant's own (deprovision): not this step
        with pytest.raises(Killed, match="step workspace:backed-up"):
            backup.final_backup(None, None, workspace="legal")
    assert taken == [None, "legal"]  # killed after the backup was taken


def test_throttle_hooks_every_client_the_process_makes(tmp_path, monkeypatch):
    """Armed: a client from the shared helper or straight from boto3 gets AWS's throttling
    answer once the shared bucket is empty (no request sent); disarmed: no hook."""
    from botocore.config import Config
    from botocore.exceptions import ClientError, EndpointConnectionError

    monkeypatch.setenv(aws.THROTTLE_ATTEMPTS_ENV, "1")
    state = tmp_path / "throttle.json"
    session = {"region_name": "us-east-1", "aws_access_key_id": "x", "aws_secret_access_key": "y"}
    closed = "http://127.0.0.1:9"  # a request that is sent fails to connect
    with armed({FAULT_THROTTLE_ENV: "kms.*=0.001", FAULT_THROTTLE_FILE_ENV: str(state)}):
        assert SharedTokenBucket(state).take("kms.*", 0.001)  # the burst of 1, taken: the bucket is empty
        for client in (aws.client("kms", session=boto3.Session(**session), endpoint_url=closed),
                       boto3.Session(**session).client("kms", endpoint_url=closed, config=Config(
                           retries={"total_max_attempts": 1}))):
            with pytest.raises(ClientError, match="ThrottlingException"):
                client.list_keys()
    assert SharedTokenBucket(state).counts()["kms.*"] == {"allowed": 1, "throttled": 2}
    with pytest.raises(EndpointConnectionError):
        aws.client("kms", session=boto3.Session(**session), endpoint_url=closed).list_keys()


def test_the_shipped_package_holds_no_fault_injection():
    """src/ and infra/ (what the wheel ships): no fault variable, no faults module."""
    shipped = [p for top in ("src", "infra") for p in (ROOT / top).rglob("*")
               if p.is_file() and "__pycache__" not in p.parts]
    assert len(shipped) > 50
    assert [str(p.relative_to(ROOT)) for p in shipped if b"TENANTCTL_FAULT" in p.read_bytes()] == []
    assert [str(p.relative_to(ROOT)) for p in shipped if p.stem == "faults"] == []
