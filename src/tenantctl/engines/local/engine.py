"""LocalEngine: the infra/ program in-process under Pulumi mocks, every
resource materialised on the sandbox (boto3 against moto, psycopg against the
sandbox PostgreSQL), with its own state file per stack.

up = plan pass (records, fails on unsupported types, feeds the policy gate)
   + apply pass (creates / updates / replaces / leaves alone)
   + deletion, in reverse creation order, of what the program no longer declares.

refresh = each recorded resource read live through its handler and compared
with its recorded inputs (no program run, nothing written). ``up(refresh=True)``
first folds that drift into the state, as Pulumi's refresh does (a resource gone
out of band leaves it, a changed one records its live values), so the passes
then create or update exactly what drifted.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tenantctl.engines.base import (
    AppliedResource,
    ChangeSet,
    Engine,
    EngineEvent,
    EventSink,
    Op,
    PropertyDiff,
    ResourceChange,
    UpResult,
)
from tenantctl.engines.local.state import ResourceState, StackState, StateFile
from tenantctl.errors import ApplyFailed, PolicyViolation, TargetUnavailable
from tenantctl.policy import PolicyGate
from tenantctl.project import Project

if TYPE_CHECKING:  # pulumi (and so the passes) load only when a program runs: `status`/`list` stay light
    from tenantctl.engines.local.handlers import Context
    from tenantctl.engines.local.passes import PlanPass, _Pass
    from tenantctl.engines.local.runtime import Program

# Bounded retries with jitter (botocore's adaptive mode adds client-side rate
# limiting on throttling: KMS CreateKey allows only a few calls per second).
# Pulumi's runtime settings are process-global: one program run at a time.
RUN_LOCK = threading.RLock()
RETRY_MODE, MAX_ATTEMPTS = "adaptive", 10
# The environment the program's providers read is process-wide: refreshes run
# in threads share one setting of it, restored when the last one leaves.
_ENV_LOCK = threading.Lock()
_ENV_USERS: list[dict[str, str | None]] = []


def _program_modules() -> tuple[Any, Any]:
    """(runtime, passes): pulumi and the passes, imported the first time with the collector paused
    (tenantctl.collector)."""
    from tenantctl import collector

    with collector.paused(lasting="tenantctl.engines.local.passes" not in sys.modules):
        from tenantctl.engines.local import passes, runtime
    return runtime, passes


def _load_program(stack: str) -> dict[str, Any]:
    from infra.program import build

    return build(stack)


def _basis(state: StackState) -> str:
    """The recorded state a refresh compared the live one with, as a token (ChangeSet.basis)."""
    import hashlib

    return hashlib.sha256(state.model_dump_json().encode()).hexdigest()


class LocalEngine(Engine):
    name = "local"

    def __init__(self, project_dir: Path, endpoints: Any, state_dir: Path | None = None,
                 gate: PolicyGate | None = None, program: Program | None = None) -> None:
        if not endpoints.is_loopback():
            raise TargetUnavailable(
                f"the LocalEngine only runs against the local sandbox; refusing {endpoints.aws_endpoint_url} / "
                f"{endpoints.pg_host}")
        self.project_dir = Path(project_dir)
        self.endpoints = endpoints
        self.state_root = Path(state_dir or endpoints.state_dir) / "local-engine"
        self.gate = gate  # the CLI's policy gate: raises to block an unsafe plan
        self.program = program or _load_program
        self._sessions: dict[tuple[str, str | None], Any] = {}
        self._clients: dict[tuple[str, str | None, str], Any] = {}
        self._identities: dict[tuple[str, str | None], dict[str, Any]] = {}
        self._clients_lock = threading.Lock()  # refreshes of several stacks run in threads
        self._identity_lock = threading.Lock()

    # -- the Engine interface -------------------------------------------------
    def preview(self, stack: str, on_event: EventSink | None = None, *, refresh: bool = False,
                read: ChangeSet | None = None) -> ChangeSet:
        with RUN_LOCK, self._aws_env():
            state = StateFile(self.state_root, stack).load()
            if refresh:  # in memory only: a preview writes nothing
                self._fold(stack, state, on_event, read if read is not None and read.basis == _basis(state) else None)
            plan = self._plan(stack, on_event, state)
            if self.gate is not None:
                self.gate(stack, plan.planned, judged_at_apply=True)  # an unsafe plan fails its preview as up would
            return ChangeSet(stack=stack, changes=plan.changes + plan.deletions())

    def up(self, stack: str, on_event: EventSink | None = None, *, refresh: bool = False) -> UpResult:
        with RUN_LOCK, self._aws_env():
            file = StateFile(self.state_root, stack)
            drift: list[ResourceChange] = []
            refreshed = None
            if refresh:
                refreshed = file.load()
                drift = self._fold(stack, refreshed, on_event)
            plan = self._plan(stack, on_event, refreshed)
            if self.gate is not None:
                self.gate(stack, plan.planned, judged_at_apply=True)  # before the apply pass: refusing changes nothing
            self.planned(ChangeSet(stack=stack, changes=plan.changes + plan.deletions()), on_event)
            if drift:  # judged and approved: the state now says what is live, as a Pulumi refresh leaves it
                file.save(refreshed)
            project, config = self._config(stack)
            state = file.load()
            runtime, passes = _program_modules()
            run = passes.ApplyPass(stack, state, self._context(config), on_event, file)
            if self.gate is not None:
                run.judge = self.gate.resolved(stack)  # unknowns the gate could not judge, judged here
            with self._recorded_on_failure(file, state):
                try:
                    outputs = runtime.run_program(self.program, project, stack, config, run, run.current,
                                                  preview=False)
                except Exception as exc:
                    raise self._failure(stack, run.error or exc) from exc
                if run.error is not None:
                    raise self._failure(stack, run.error) from run.error
                deleted = self._delete(run, [r for r in reversed(state.resources)
                                             if r.urn not in set(run.registered)])
            # Every survivor was registered by this run: its registration order is a dependency order.
            position = {urn: i for i, urn in enumerate(run.registered)}
            state.resources.sort(key=lambda r: position.get(r.urn, -1))
            state.outputs = json.loads(json.dumps(outputs, default=str))
            file.save(state)
            changes = ChangeSet(stack=stack, changes=run.changes + deleted)
            self._summary(stack, changes, on_event)
            # Established by this up: what it wrote, and with a refresh every survivor (read live just now).
            touched = {c.urn for c in run.changes if c.op in (Op.create, Op.update, Op.replace)}
            applied = [AppliedResource(type=r.type, name=r.name, inputs=r.inputs, outputs=r.outputs,
                                       made=r.urn in run.made)
                       for r in state.resources if r.status == "created" and (refresh or r.urn in touched)]
            return UpResult(stack=stack, outputs=state.outputs, changes=changes, drift=drift, applied=applied)

    def refresh(self, stack: str, on_event: EventSink | None = None, *, absent_ok: bool = False) -> ChangeSet:
        """Drift of every resource the stack's state knows, live against recorded;
        writes nothing. No program run, so stacks may be refreshed from several threads."""
        with self._aws_env():
            file = StateFile(self.state_root, stack)
            if not file.exists() and absent_ok:
                return ChangeSet(stack=stack)
            if not file.exists():  # a record the engine knows nothing of is not "no drift"
                raise ApplyFailed(f"stack {stack}: no state on this sandbox (never applied here, or the sandbox "
                                  "was reset since): nothing to compare its live resources with")
            state = file.load()
            ctx = self._context(self._config(stack)[1] if self._stack_file(stack).exists() else {})
            changes = []
            for entry in state.resources:
                change, live = self._drift(ctx, stack, entry, on_event)
                changes.append(change.model_copy(update={"live": live}) if live else change)
            return ChangeSet(stack=stack, changes=changes, basis=_basis(state))

    def preview_destroy(self, stack: str, on_event: EventSink | None = None) -> ChangeSet:
        state = StateFile(self.state_root, stack).load()
        return ChangeSet(stack=stack, changes=[
            ResourceChange(op=Op.delete, type=r.type, name=r.name, urn=r.urn, arn=r.arn, retained=r.retain)
            for r in reversed(state.resources)])

    def destroy(self, stack: str, on_event: EventSink | None = None) -> ChangeSet:
        with RUN_LOCK, self._aws_env():
            file = StateFile(self.state_root, stack)
            state = file.load()
            config = self._config(stack)[1] if self._stack_file(stack).exists() else {}
            from tenantctl.engines.local.passes import _Pass

            run = _Pass(stack, state, self._context(config), on_event, file)
            if on_event is not None:
                on_event(EngineEvent(stack=stack, kind="plan", total=len(state.resources)))
            with self._recorded_on_failure(file, state):
                deleted = self._delete(run, list(reversed(state.resources)))
            file.delete()
            changes = ChangeSet(stack=stack, changes=deleted)
            self._summary(stack, changes, on_event)
            return changes

    def outputs(self, stack: str) -> dict[str, Any]:
        file = StateFile(self.state_root, stack)
        if not file.exists():
            return {}
        return file.load().outputs

    def holds_resources(self, stack: str) -> bool:
        # An interrupted run's intents count: the resource may exist (the next up adopts it).
        return bool(StateFile(self.state_root, stack).load().resources)

    # -- internals ------------------------------------------------------------
    def _drift(self, ctx: Context, stack: str, entry: ResourceState,
               on_event: EventSink | None) -> tuple[ResourceChange, dict[str, Any]]:
        """One resource read live: (its drift, the live values of what differs)."""
        from tenantctl.engines.diffs import like, property_diffs, same
        from tenantctl.engines.local.handlers import HANDLERS, Desired

        change = ResourceChange(op=Op.same, type=entry.type, name=entry.name, urn=entry.urn,
                                arn=entry.arn, id=entry.id or "")
        if entry.status != "created":  # an interrupted run's intent: the next up adopts or deletes it
            change.op = Op.update
            change.diffs = [PropertyDiff(path="(state)", old="created", new=f"{entry.status} (a run was interrupted)")]
            return change, {}
        handler = HANDLERS.get(entry.type)
        if handler is None:
            raise ApplyFailed(f"stack {stack}: cannot refresh {entry.name}: type {entry.type} is not supported")
        if on_event:
            on_event(EngineEvent(stack=stack, kind="resource-pre", op=Op.same, type=entry.type, name=entry.name))
        try:
            live = handler.read(ctx, entry.id, Desired(entry.urn, entry.type, entry.name, entry.inputs))
        except Exception as exc:
            raise ApplyFailed(f"stack {stack}: {entry.name} ({entry.type}): read failed: {exc}") from exc
        if live is None:
            change.op = Op.delete
            return change, {}
        expected = {**handler.read_defaults, **entry.inputs}
        keys = set(live) & set(expected)
        live = {k: like(expected[k], live[k]) for k in keys}
        change.diffs = property_diffs(expected, live, keys)
        if change.diffs:
            change.op = Op.update
        return change, {k: live[k] for k in keys if not same(expected.get(k), live[k])}

    def _fold(self, stack: str, state: StackState, on_event: EventSink | None,
              read: ChangeSet | None = None) -> list[ResourceChange]:
        """Make ``state`` say what is live (gone resources leave it, drifted
        inputs take their live values); returns the drift found. ``read``: a
        refresh of this very state, taken instead of reading each resource."""
        ctx = self._context(self._config(stack)[1])
        found = {c.urn: c for c in read.changes} if read is not None else {}
        drift = []
        for entry in list(state.resources):
            change, live = ((found[entry.urn], found[entry.urn].live) if entry.urn in found
                            else self._drift(ctx, stack, entry, on_event))
            if change.op is Op.delete:
                state.remove(entry.urn)
            elif change.op is Op.update and live:
                state.put(entry.model_copy(update={"inputs": {**entry.inputs, **live}}))
            if change.op is not Op.same:
                drift.append(change)
        return drift

    def _plan(self, stack: str, on_event: EventSink | None, state: StackState | None = None) -> PlanPass:
        runtime, passes = _program_modules()
        project, config = self._config(stack)
        state = state if state is not None else StateFile(self.state_root, stack).load()
        plan = passes.PlanPass(stack, state, self._context(config), on_event)
        try:
            runtime.run_program(self.program, project, stack, config, plan, plan.current, preview=True)
        except Exception as exc:
            if not plan.unsupported:
                raise ApplyFailed(f"stack {stack}: {plan.error or exc}") from exc
        if plan.unsupported:
            raise ApplyFailed(f"stack {stack}: nothing was changed: " + "; ".join(plan.unsupported))
        return plan

    def _delete(self, run: _Pass, entries: list) -> list[ResourceChange]:
        from tenantctl.engines.local.handlers import HANDLERS
        from tenantctl.engines.local.passes import delete_resource

        done = []
        for entry in entries:
            handler = HANDLERS.get(entry.type)
            if handler is None:
                raise ApplyFailed(f"stack {run.stack}: cannot delete {entry.name}: type {entry.type} is not supported")
            run.emit("resource-pre", Op.delete, entry.type, entry.name)
            try:
                delete_resource(run, handler, entry)
            except Exception as exc:
                raise ApplyFailed(f"stack {run.stack}: {entry.name} ({entry.type}): delete failed: {exc}") from exc
            run.emit("resource-done", Op.delete, entry.type, entry.name)
            # With its ARN: a repair's orphan scan, taken before the up, must know what the up deleted.
            done.append(ResourceChange(op=Op.delete, type=entry.type, name=entry.name, urn=entry.urn, arn=entry.arn,
                                       retained=entry.retain))
        return done

    @staticmethod
    @contextmanager
    def _recorded_on_failure(file: StateFile, state: StackState) -> Iterator[None]:
        """A run that fails still writes what its calls returned (held in memory
        until the next write): the next run then starts from it, not from intents."""
        try:
            yield
        except BaseException:
            file.save(state)
            raise

    @staticmethod
    def _failure(stack: str, error: BaseException) -> Exception:
        """What a failed apply pass raises: a policy refusal as itself (exit 8)."""
        if isinstance(error, PolicyViolation):
            return error
        return ApplyFailed(f"stack {stack}: {error}")

    @staticmethod
    def _summary(stack: str, changes: ChangeSet, on_event: EventSink | None) -> None:
        if on_event:
            text = ", ".join(f"{n} {op}" for op, n in changes.summary().items()) or "no resources"
            on_event(EngineEvent(stack=stack, kind="summary", message=text))

    def _stack_file(self, stack: str) -> Path:
        return Project.load(self.project_dir).stack_file(stack)

    def _config(self, stack: str) -> tuple[str, dict[str, Any]]:
        """The stack file's config, with its cell's account (``aws:assumeRoles``) laid over it."""
        from tenantctl.stackconfig import program_config

        project = Project.load(self.project_dir)
        name = project.name
        path = project.stack_file(stack)
        if not path.exists():
            raise ApplyFailed(f"stack {stack}: no stack config {path}")
        return name, program_config(path, name)

    def _session(self, region: str, role_arn: str | None) -> Any:
        """The sandbox's credentials, or a role in another account assumed with
        them (moto serves requests made with those credentials in that account)."""
        from tenant_runtime.boto_sessions import new_session
        from tenantctl import aws

        key = (region, role_arn)
        if key not in self._sessions:
            env = self.endpoints.aws_env()
            if role_arn is None:
                self._sessions[key] = new_session(
                    aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                    region_name=region)
            else:
                sts = aws.client("sts", session=self._session(region, None), endpoint_url=env["AWS_ENDPOINT_URL"])
                self._sessions[key] = aws.assumed_session(sts, role_arn, region)
        return self._sessions[key]

    def _context(self, config: dict[str, Any]) -> Context:
        from tenantctl import aws

        ep = self.endpoints
        region = str(config.get("aws:region") or ep.region)
        roles = config.get("aws:assumeRoles") or []
        role_arn = roles[0].get("roleArn") if roles else None

        def client(service: str) -> Any:
            # Kept for the engine's life (plan and apply passes, every stack of an
            # `apply` worker): making a client costs ~50 ms, a run uses a dozen.
            key = (region, role_arn, service)
            with self._clients_lock:  # a boto3 session is not thread-safe while it makes clients
                if key not in self._clients:  # bounded backoff with jitter, throttling retried longest (tenantctl.aws)
                    self._clients[key] = aws.client(service, session=self._session(region, role_arn),
                                                    endpoint_url=ep.aws_endpoint_url)
                return self._clients[key]

        def identity() -> dict[str, Any]:
            key = (region, role_arn)
            with self._identity_lock:  # resources registered together ask once
                if key not in self._identities:  # the same credentials are the same caller for the engine's life
                    self._identities[key] = client("sts").get_caller_identity()
                return self._identities[key]

        def pg_connect(dbname: str | None = None) -> Any:
            import psycopg

            return psycopg.connect(host=ep.pg_host, port=ep.pg_port, dbname=dbname or ep.pg_database,
                                   user=ep.pg_user, password=ep.pg_password, autocommit=True, connect_timeout=10)

        def stack_outputs(name: str) -> dict[str, Any]:
            file = StateFile(self.state_root, name)
            if not file.exists():
                raise ApplyFailed(f"stack reference {name!r}: that stack has not been applied on this sandbox")
            return file.load().outputs

        from tenantctl.engines.local.handlers import Context

        return Context(region=region, client=client, pg_connect=pg_connect,
                       pg_endpoint=(ep.pg_host, ep.pg_port, ep.pg_database, ep.pg_user, ep.pg_password),
                       stack_outputs=stack_outputs, identity=identity)

    @contextmanager
    def _aws_env(self) -> Iterator[None]:
        """Point every boto3 client the program's providers make at moto, with
        bounded retries; nested and concurrent uses share one setting. The last
        one out puts back the values the first one found, but leaves set a
        variable the process did not have: removing it raced with other threads
        making clients (botocore asks whether a variable is set, then reads it:
        a KeyError when it went in between, as `apply --refresh` met)."""
        wanted = {**self.endpoints.aws_env(), "AWS_RETRY_MODE": RETRY_MODE, "AWS_MAX_ATTEMPTS": str(MAX_ATTEMPTS)}
        with _ENV_LOCK:
            _ENV_USERS.append({k: os.environ.get(k) for k in wanted})
            os.environ.update(wanted)
        try:
            yield
        finally:
            with _ENV_LOCK:
                saved = _ENV_USERS.pop()
                if not _ENV_USERS:
                    os.environ.update({key: value for key, value in saved.items() if value is not None})
