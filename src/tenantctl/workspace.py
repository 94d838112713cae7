"""Where a command runs: the project (Pulumi.yaml, stacks/), its target, the
target's engine and AWS clients, its cells (and each cell's clients, in the
cell's account and region), and the registry named by the default cell's
platform stack (the home cell).

Nothing here deploys anything as a side effect of being read: a cell is
brought up only through ``ensure_cell()`` / ``ensure_platform()``, which
provisioning and `tenantctl cell add` call.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from functools import cached_property
from pathlib import Path
from typing import Any

from tenantctl.aws import Clients
from tenantctl.engines.base import Approval, Engine, EventSink, UpResult
from tenantctl.errors import InvalidInput, NotFound, TargetUnavailable
from tenantctl.models import CellSpec, TenantRecord, utcnow
from tenantctl.naming import DEFAULT_CELL, PLATFORM_STACK, cell_stack
from tenantctl.project import PROJECT_FILE, Project, ensure_project_file, find_root
from tenantctl.registry import RegistryWriter, failure_text
from tenantctl.registry_cells import AppliedBudget, CellBusy
from tenantctl.timestamps import utc_minute

# Platform outputs the sandbox must have: a platform applied before one of them
# existed is applied again (on AWS that is `tenantctl platform up`'s job).
PLATFORM_OUTPUTS = ("registry_table", "revocation_table", "gateway_secret_arn")  # the home cell's
CELL_OUTPUTS = ("bucket", "gateway_secret_arn")  # every other cell's


def same_account_region(ws: Workspace, spec: CellSpec, target_account: str | None) -> list[CellSpec]:
    """The other cells of ``spec``'s account and region, by account id (a cell naming no
    role is in ``target_account``, the target's own; two roles may lead to one account)."""
    where = (spec.account_id or target_account, spec.region)
    return [c for c in ws.cells().values()
            if c.name != spec.name and (c.account_id or target_account, c.region) == where]


def relocation(spec: CellSpec, outputs: dict[str, Any], target_account: str | None) -> str | None:
    """Why ``spec`` (a cell's stack file) cannot be applied over ``outputs`` (what
    the cell was deployed as): it names another region or account (a cell naming
    no role is in ``target_account``). A cell's region and account never change:
    its tenants' data is there."""
    if not outputs.get("bucket"):
        return None
    account = spec.account_id or target_account
    moved = [f"{what} {new} (deployed in {old})" for what, new, old in
             (("region", spec.region, outputs.get("region")), ("account", account, outputs.get("account_id")))
             if old and new and new != old]
    if not moved:
        return None
    return (f"the stack file of cell {spec.name!r} names {' and '.join(moved)}: a cell's region and account never "
            f"change (put stacks/Pulumi.{cell_stack(spec.name)}.yaml back; `tenantctl cell add` adds another cell)")


class Workspace:
    """``approve``: handed to the engine as its approve hook (``Engine.approve``):
    what may go ahead when an up's plan deletes or replaces something."""

    def __init__(self, project_dir: Path | None = None, cwd: Path | None = None,
                 approve: Approval | None = None) -> None:
        from tenantctl.target import load_target

        self.cwd = cwd or Path.cwd()
        self.project_dir = project_dir or find_root(self.cwd)
        self.target = load_target(self.cwd)
        self._outputs: dict[str, dict[str, Any]] = {}
        self._approve = approve

    @property
    def approve(self) -> Approval | None:
        return self._approve

    @approve.setter
    def approve(self, hook: Approval | None) -> None:
        self._approve = hook
        if "engine" in self.__dict__:  # already opened
            self.engine.approve = hook

    @property
    def stacks_dir(self) -> Path:
        if (self.project_dir / PROJECT_FILE).is_file():
            return Project.load(self.project_dir).stacks_dir
        return self.project_dir / "stacks"  # what ensure_project_file will declare

    @property
    def is_sandbox(self) -> bool:
        return self.target.kind == "sandbox"

    @cached_property
    def sandbox(self) -> Any:
        """The running sandbox's endpoints (started when needed); sandbox targets only."""
        if not self.is_sandbox:
            raise TargetUnavailable("this target is AWS, not the sandbox")
        from tenantctl.sandbox import ensure_running, resolve_state_dir

        return ensure_running(resolve_state_dir(self.target.sandbox.state_dir, self.project_dir))

    @cached_property
    def engine(self) -> Engine:
        from tenantctl.engines import open_engine

        ensure_project_file(self.project_dir)
        engine = open_engine(self.target, self.project_dir, sandbox=self.sandbox if self.is_sandbox else None)
        engine.approve = self.approve
        return engine

    @cached_property
    def client(self) -> Clients:
        """``ws.client("s3", region=None)``: a client of the target's account."""
        if self.is_sandbox:
            env = self.sandbox.aws_env()
            return Clients(region=self.sandbox.region, endpoint_url=self.sandbox.aws_endpoint_url,
                           credentials=(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]))
        return Clients(region=self.target.aws.region, profile=self.target.aws.profile)

    def platform_outputs(self) -> dict[str, Any]:
        """The home (default) cell's platform outputs; {} before it was first applied."""
        return self.cell_outputs(DEFAULT_CELL)

    def ensure_platform(self, on_event: EventSink | None = None) -> dict[str, Any]:
        """The home cell's outputs, applying it first on the sandbox when it is not up yet."""
        return self.ensure_cell(DEFAULT_CELL, on_event)

    # -- cells -------------------------------------------------------------------------
    def cells(self) -> dict[str, CellSpec]:
        """Every cell of the project (read from stacks/ each time: `cell add` may add one)."""
        from tenantctl.stackconfig import cell_specs

        return cell_specs(self.stacks_dir)

    def committed_cells(self, only: str | None = None) -> dict[str, CellSpec]:
        """The cells with a stack file in stacks/ (the home cell first), or only ``only``."""
        from tenantctl.stackconfig import stack_file

        return {name: spec for name, spec in self.cells().items()
                if (only is None or name == only) and stack_file(self.stacks_dir, cell_stack(name)).exists()}

    def cells_of(self, records: Iterable[TenantRecord],
                 cells: dict[str, CellSpec] | None = None) -> dict[str, CellSpec | None]:
        """Each record's cell by tenant id, from ``cells`` (default: stacks/, read once); None for a
        cell it does not define (a fleet-wide read reports that tenant rather than failing for everyone)."""
        cells = self.cells() if cells is None else cells
        return {r.tenant_id: cells.get(r.cell) or (CellSpec() if r.cell == DEFAULT_CELL else None) for r in records}

    @staticmethod
    def account_roles(specs: Iterable[CellSpec]) -> dict[str | None, str | None]:
        """Each account of the cells ``specs`` by id (None: the target's own) and the role reaching
        it: its first cell's (cells of one account may name different roles; one is enough)."""
        roles: dict[str | None, str | None] = {}
        for spec in specs:
            roles.setdefault(spec.account_id, spec.account_role_arn)
        return roles

    def undefined_cell(self, record: TenantRecord) -> str:
        """Why a fleet-wide read skips a record whose cell ``cells_of`` found no stack file for."""
        return f"its cell {record.cell!r} has no stack file in {self.stacks_dir.name}/: its account cannot be read"

    def cell_of(self, record: TenantRecord) -> CellSpec:
        """The cell ``record`` lives in. A tenant named on its own whose cell stacks/ does not
        define (another project's cell sharing the registry, or a stack file removed) is
        InvalidInput (exit 3), saying what to do: the cell exists, adding it would be wrong."""
        try:
            return self.cell(record.cell)
        except NotFound:
            raise InvalidInput(
                f"tenant {record.tenant_id!r}: {self.undefined_cell(record)}; restore "
                f"{self.stacks_dir.name}/Pulumi.{cell_stack(record.cell)}.yaml (your repository's history has it), "
                f"or run this in the project that defines cell {record.cell!r} (`tenantctl audit` lists the "
                "records of cells this project does not define)") from None

    def stack_cell(self, record: TenantRecord, stack: str) -> CellSpec | None:
        """The cell a tenant stack is applied in (``stackconfig.tenant_stack_cell``: the record's
        but mid-move, when the stack may already subscribe its target cell's alarm list; the
        record's for its current stack whose file is gone, unknown for another), None when this
        project does not define it. `refresh` and `check` judge a stack's alarm subscriptions
        against it, so both say the same of a tenant mid-move."""
        from tenantctl.stackconfig import stack_file, tenant_stack_cell

        if stack_file(self.stacks_dir, stack).exists():
            name = tenant_stack_cell(self.stacks_dir, stack)
        else:
            name = record.cell if stack == record.current_stack else None
        try:
            return self.cell(name) if name is not None else None
        except NotFound:
            return None

    def cell(self, name: str) -> CellSpec:
        from tenantctl.stackconfig import read_cell

        spec = read_cell(self.stacks_dir, name)
        if spec is None:
            if name == DEFAULT_CELL:
                return CellSpec()
            raise NotFound(f"no cell {name!r} in {self.stacks_dir} (`tenantctl cell list` shows the cells; "
                           f"`tenantctl cell add {name} --region REGION` adds it)")
        return spec

    def cell_outputs(self, name: str) -> dict[str, Any]:
        """The cell's platform outputs; {} before it was first applied. Kept for
        the workspace's life once known (placement asks for every candidate on
        every provision; the PulumiEngine answers through the CLI)."""
        if name not in self._outputs:
            outputs = self.engine.outputs(cell_stack(name))
            if not outputs:
                return outputs
            self._outputs[name] = outputs
        return self._outputs[name]

    def refuse_relocated(self, spec: CellSpec, outputs: dict[str, Any]) -> None:
        """InvalidInput (exit 3) when ``spec`` (the cell's stack file) names another
        region or account than ``outputs`` (what the cell was deployed as)."""
        moved = self.relocation(spec, outputs)
        if moved:
            raise InvalidInput(moved)

    def relocation(self, spec: CellSpec, outputs: dict[str, Any]) -> str | None:
        """``relocation`` of ``spec`` over ``outputs``, the target's own account read only when needed."""
        if not outputs.get("bucket"):
            return None
        own = spec.account_id is None and spec.name != DEFAULT_CELL  # in the home cell's account
        return relocation(spec, outputs, self.platform_outputs().get("account_id") if own else None)

    def forget_cell_outputs(self, name: str) -> None:
        """The cell's stack changed outside ``up_cell`` (destroyed): read its outputs again when asked."""
        self._outputs.pop(name, None)

    def cell_clients(self, name: str) -> Clients:
        """AWS clients in the cell's account (its role assumed) and region."""
        spec = self.cell(name)
        return self.client.in_account(spec.account_role_arn, spec.region)

    def clients_for(self, record: TenantRecord) -> Clients:
        """AWS clients where the tenant lives: its cell's account, its own region."""
        spec = self.cell_of(record)
        return self.client.in_account(spec.account_role_arn, record.region)

    def ensure_cell(self, name: str, on_event: EventSink | None = None) -> dict[str, Any]:
        """The cell's outputs, applying it first when it is not up yet (or was
        applied by a tenantctl that did not export every output yet): on the
        sandbox any cell with a stack file (the default cell's is written on
        first use); on AWS only ever through `platform up` / `cell add` /
        `apply`."""
        outputs = self.cell_outputs(name)
        wanted = PLATFORM_OUTPUTS if name == DEFAULT_CELL else CELL_OUTPUTS
        # Off the sandbox the first output says it was applied; the sandbox re-applies an older cell.
        if outputs.get("bucket") and all(outputs.get(k) for k in (wanted if self.is_sandbox else wanted[:1])):
            return outputs
        if not self.is_sandbox:
            how = ("run `tenantctl platform up` first" if name == DEFAULT_CELL else
                   f"run `tenantctl cell add {name}` first, or commit its stack file: `tenantctl apply` applies it")
            raise TargetUnavailable(f"cell {name!r} has no platform outputs on this target: {how}")
        from tenantctl.stackconfig import stack_file, write_cell

        if name == DEFAULT_CELL and not stack_file(self.stacks_dir, PLATFORM_STACK).exists():
            write_cell(self.stacks_dir, CellSpec())
        self.cell(name)  # NotFound for a cell without a stack file
        # Another run (a parallel apply's worker) may be bringing the same cell up: wait for it.
        result = self.up_cell(name, on_event, wait=math.inf, unless_applied=True)
        if result is None:
            self.forget_cell_outputs(name)
            return self.cell_outputs(name)
        return result.outputs

    def up_cell(self, name: str, on_event: EventSink | None = None, *, wait: float = 0.0,
                unless_applied: bool = False, on_wait: Callable[[CellBusy], None] | None = None,
                refresh: bool = False, write: Callable[[], object] | None = None) -> UpResult | None:
        """Apply the cell's platform stack (its stack file must exist) under the
        cell's lease, and record what it was applied from and its draining
        flag. ``wait``: how long to
        wait for another run's lease (0: CellBusy at once). ``unless_applied``:
        None, and nothing run, when the stack was last applied from the same
        spec and program (checked once the lease is held). ``refresh``: against
        its live state (a repair). ``write``: writes the stack file once the lease is
        held (`cell add`): a run refused the lease leaves the file as it was, one
        that waited builds on what the holder wrote. A file naming another region
        or account than the cell was deployed in: InvalidInput (exit 3)."""
        from tenantctl.fingerprint import cell_hash

        def committed() -> tuple[CellSpec, str]:
            if write is not None:
                write()
            spec = self.cell(name)
            self.refuse_relocated(spec, self.cell_outputs(name))
            return spec, cell_hash(spec, self.project_dir)

        registry = self._registry_or_none()
        if registry is None:  # the home cell's first up creates the registry: nothing to lease yet
            spec, applied = committed()
            result = self._up_cell(name, on_event)
            self.registry.set_applied(name, applied, AppliedBudget.of(spec))
        else:
            from tenantctl import cell_lease

            with cell_lease.held(registry, name, "cell up", wait=wait, on_wait=on_wait) as lease:
                spec, applied = committed()  # read under the lease: what a run waited for may have written
                if unless_applied and lease.applied == applied:
                    return None
                try:
                    result = self._up_cell(name, on_event, refresh)
                except BaseException as exc:
                    # Its refresh may have recorded live, drifted values as its state: `refresh` could
                    # call the cell clean. A refusal before the first change (the gate's) leaves it so.
                    if not getattr(exc, "changed_nothing", False):
                        lease.failed = f"failed at {utc_minute(utcnow())}: {failure_text(exc)}"
                    raise
                lease.done, lease.budget = applied, AppliedBudget.of(spec)
        self.registry.set_draining(name, spec.draining)  # the counter's flag, as the stack file says
        return result

    def _up_cell(self, name: str, on_event: EventSink | None, refresh: bool = False) -> UpResult:
        result = self.engine.up(cell_stack(name), on_event=on_event, refresh=refresh)
        self._outputs[name] = result.outputs
        if name == DEFAULT_CELL:
            self.__dict__.pop("registry", None)
        return result

    def _refuse_reading_nothing(self) -> None:
        """No project here (no Pulumi.yaml from the working directory up) and no
        sandbox started for it: a read of the registry can only end in "no
        platform", so it says so before anything is written or started (the
        engine would write Pulumi.yaml and start a sandbox that keeps running,
        for a command run outside the project or a mistyped -C)."""
        if not self.is_sandbox or (self.project_dir / PROJECT_FILE).is_file():
            return
        from tenantctl.sandbox import resolve_state_dir

        state = resolve_state_dir(self.target.sandbox.state_dir, self.project_dir)
        if not (state / "sandbox" / "endpoints.json").is_file():
            raise TargetUnavailable(f"no tenantctl project in {self.cwd} or above (no {PROJECT_FILE}) and no "
                                    "sandbox started for it, so no platform and no registry: run it in the "
                                    "project (or `-C DIR`); `tenantctl provision` starts a project here")

    def _registry_or_none(self) -> RegistryWriter | None:
        try:
            return self.registry
        except TargetUnavailable:
            return None

    @cached_property
    def registry(self) -> RegistryWriter:
        self._refuse_reading_nothing()
        table = self.platform_outputs().get("registry_table")
        if not table:
            raise TargetUnavailable("no platform is deployed on this target yet, so there is no registry: "
                                    "`tenantctl provision` (or `tenantctl platform up`) deploys it")
        return RegistryWriter(table, client=self.client("dynamodb"))


_WORKERS: dict[tuple[str, str, bool | None], Workspace] = {}


def worker_workspace(project_dir: str, cwd: str, yes: bool | None = None) -> Workspace:
    """The Workspace of a pool worker process (apply's tenants, an evacuation's
    moves), kept from one task to the next (engine, registry client). The first
    call makes SIGTERM an interrupt, so a cancelled run releases the tenant locks
    the worker holds. ``yes``: the approval hook a worker without a terminal
    gets (a plan that deletes or replaces needs True); None: no hook."""
    key = (project_dir, cwd, yes)
    if key not in _WORKERS:
        from tenantctl.confirmation import Confirmation
        from tenantctl.errors import interrupt_on_sigterm

        interrupt_on_sigterm()
        _WORKERS[key] = Workspace(project_dir=Path(project_dir), cwd=Path(cwd),
                                  approve=None if yes is None else Confirmation(yes))
    return _WORKERS[key]
