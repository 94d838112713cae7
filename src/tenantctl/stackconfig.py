"""stacks/Pulumi.<stack>.yaml: the committed desired state, rendered from templates/.

The files are what CI reviews and `apply` reconciles, so they hold every option
explicitly (defaults included) and read back into the same spec: a tenant's
``TenantSpec`` (`Pulumi.<id>.yaml`), a cell's ``CellSpec`` (`Pulumi.platform.yaml`
for the default cell, `Pulumi.cell-<name>.yaml` for the others).

Stack files parse with libyaml's C loader when PyYAML has it (a no-change
`apply` over 10,000 tenants reads 10,000 files).

A tenant's file holds nothing the spec does not say: its config is the spec
(`tenantctl:tenant`), its cell's stack (`tenantctl:platformStack`) and the
spec's region (`aws:region`), and a file holding anything else, or another
region, is refused. Its fingerprint is the spec's, so an edit anywhere else in
it would never reach the cloud, and what other keys could change (the account,
credentials, tags) is the cell's, the target's or the spec's to say. Comments
and the secrets-provider keys the Pulumi CLI records at the top level stay.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from tenantctl.errors import InvalidInput
from tenantctl.files import write_atomic
from tenantctl.models import CellSpec, TenantRecord, TenantSpec, describe_validation_error
from tenantctl.naming import CELL_STACK_PREFIX, DEFAULT_CELL, cell_of_stack, cell_stack, require_valid, stack_tenant

Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
CELL_KEY = "tenantctl:platform"  # every cell's spec; the default cell's file always had this key
TENANT_KEY = "tenantctl:tenant"
PLATFORM_REF_KEY = "tenantctl:platformStack"
REGION_KEY = "aws:region"
ASSUME_ROLES_KEY = "aws:assumeRoles"  # pulumi-aws 7 provider config (a list of AssumeRoles)
ALARM_SUBSCRIPTIONS_KEY = "tenantctl:alarmSubscriptions"  # a tenant stack's: its cell's alarm_subscriptions
SESSION_NAME = "tenantctl"


def stack_file(stacks_dir: Path, stack: str) -> Path:
    return stacks_dir / f"Pulumi.{stack}.yaml"


def stack_of(tenant_id: str, record: TenantRecord | None) -> str:
    """The stack a per-tenant operation runs on: the one the tenant's record
    names (``acme.k1`` once a move to another account or region finished), its
    id for a tenant not in the registry yet."""
    return record.current_stack if record is not None else tenant_id


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=Loader)  # noqa: S506 - a safe loader (C or pure Python)


def _dump(data: dict) -> str:
    return yaml.dump(data, Dumper=Dumper, sort_keys=False, default_flow_style=False).rstrip("\n")


def render_tenant(spec: TenantSpec) -> str:
    from tenantctl.templates import render

    return render("stack.yaml.j2", spec=spec, platform_stack=cell_stack(spec.cell or DEFAULT_CELL),
                  tenant_yaml=_dump(spec.desired()))


def render_cell(spec: CellSpec) -> str:
    from tenantctl.templates import render

    body = spec.model_dump(mode="json", exclude_none=True, exclude=spec.unwritten)
    return render("platform.yaml.j2", spec=spec, platform_yaml=_dump(body))


# Depth below which a stack file's keys are tenantctl's own (the spec mappings
# under `config`): a key the new spec lacks goes. Above it (top-level keys such
# as the `secretsprovider` Pulumi records, other config keys) nothing is removed.
_OWNED_DEPTH = 2


def _write(path: Path, text: str) -> bool:
    """Write the stack file rendered as ``text``; True when its content changed.
    An existing file is edited round-trip instead of replaced: hand-written
    comments, key order and keys tenantctl does not own stay."""
    if path.exists():
        from tenantctl import yamledit

        current = path.read_text()
        wanted = load_yaml(text)
        text = yamledit.edit(current, lambda doc: yamledit.set_tree(doc, wanted, prune_from=_OWNED_DEPTH))
        if text == current:
            return False
    write_atomic(path, text)
    return True


def write_tenant(stacks_dir: Path, spec: TenantSpec, stack: str | None = None) -> bool:
    """Write the tenant's stack file (``stack``: one of its stacks of another key
    generation, else the one named by its id); True when its content changed."""
    require_valid(spec.id)
    if stack is not None and (stack_tenant(stack) or ("", 0))[0] != spec.id:
        raise InvalidInput(f"stack {stack!r} is not one of tenant {spec.id!r}'s")
    return _write(stack_file(stacks_dir, stack or spec.id), render_tenant(spec))


def write_cell(stacks_dir: Path, spec: CellSpec) -> bool:
    return _write(stack_file(stacks_dir, spec.stack), render_cell(spec))


def _read(path: Path, text: str | None = None) -> dict:
    """A stack file's top-level mapping (``text``: its content, already read)."""
    try:
        data = load_yaml(path.read_text() if text is None else text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise InvalidInput(f"{path}: not valid YAML ({getattr(exc, 'problem', exc)}{where})") from None
    if not isinstance(data, dict) or not isinstance(data.get("config") or {}, dict):
        raise InvalidInput(f"{path}: not a stack file (a mapping whose `config` is a mapping)")
    return data


def read_config(path: Path) -> dict:
    """The `config` mapping of a stack file."""
    return _read(path).get("config") or {}


def program_config(path: Path, project: str) -> dict:
    """The stack file's config as a program run in-process gets it: its cell's
    account laid over it (``provider_config``) and every key namespaced
    (``tenant`` in project ``tenantctl`` is ``tenantctl:tenant``)."""
    raw = read_config(path)
    raw = {**raw, **provider_config(path.parent, path.name.removeprefix("Pulumi.").removesuffix(".yaml"), raw)}
    return {(k if ":" in k else f"{project}:{k}"): v for k, v in raw.items()}


# What a tenant stack file may hold besides comments (module docstring): its
# config keys, and the top-level keys `pulumi stack init` records (an ESC
# `environment` would be config from elsewhere).
TENANT_CONFIG_KEYS = frozenset({TENANT_KEY, PLATFORM_REF_KEY, REGION_KEY})
STACK_FILE_KEYS = frozenset({"config", "secretsprovider", "encryptedkey", "encryptionsalt"})


def _foreign_keys(path: Path, data: dict, config: dict) -> str | None:
    """Why ``path`` holds keys a tenant stack file may not, or None."""
    top, keys = data.keys() - STACK_FILE_KEYS, config.keys() - TENANT_CONFIG_KEYS
    if top:
        return f"{path}: top-level key(s) {_names(top)}: a tenant stack file holds only {_names(STACK_FILE_KEYS)}"
    if keys:
        return (f"{path}: config key(s) {_names(keys)}: a tenant stack file's config holds only "
                f"{_names(TENANT_CONFIG_KEYS)} (apply fingerprints the spec alone, so an edit elsewhere would never "
                "be deployed; the account and credentials are its cell's and the target's, the tags its spec's)")
    return None


def _names(keys: Iterable[Any]) -> str:
    return ", ".join(f"`{k}`" for k in sorted(map(str, keys)))


def read_tenant(path: Path) -> TenantSpec:
    """The tenant's spec; InvalidInput for a file the program would not run as
    it (module docstring): checked on the one parse, a no-change `apply` reads every file."""
    data = _read(path)
    config = data.get("config") or {}
    raw = config.get(TENANT_KEY)
    if not isinstance(raw, dict):
        raise InvalidInput(f"{path}: missing the `{TENANT_KEY}` mapping")
    try:
        spec = TenantSpec.model_validate(raw)
    except ValidationError as exc:
        raise InvalidInput(f"{path}: {describe_validation_error(exc)}") from None
    stack = path.name.removeprefix("Pulumi.").removesuffix(".yaml")
    expected = (stack_tenant(stack) or (stack, 0))[0]  # `acme.k1` holds tenant `acme`
    if spec.id != expected:
        raise InvalidInput(f"{path}: tenant id {spec.id!r} does not match the file name (expected {expected!r})")
    foreign = _foreign_keys(path, data, config)
    if foreign is not None:
        raise InvalidInput(foreign)
    region = config.get(REGION_KEY)
    if region != spec.region:
        raise InvalidInput(f"{path}: {REGION_KEY} {region!r} is not the tenant's region {spec.region!r} (the program "
                           "refuses to run it)" if region is not None else
                           f"{path}: no {REGION_KEY} (the tenant's region is {spec.region!r}): its resources would be "
                           "created in whichever region the runner's environment names")
    return spec


# Cells' specs by (cell, file text): a provision reads its cell's ~8 times
# (placement, the account its stack runs in, the check), each a YAML parse and
# a validation; a CellSpec is frozen, so one instance serves every reader.
_CELLS: dict[tuple[str, str], CellSpec] = {}


def read_cell(stacks_dir: Path, cell: str = DEFAULT_CELL) -> CellSpec | None:
    """The cell's committed spec; None when it has no stack file."""
    path = stack_file(stacks_dir, cell_stack(cell))
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    spec = _CELLS.get((cell, text))
    if spec is not None:
        return spec
    raw = (_read(path, text).get("config") or {}).get(CELL_KEY) or {}
    try:
        spec = CellSpec.model_validate({"name": cell, **raw})
    except ValidationError as exc:
        raise InvalidInput(f"{path}: {describe_validation_error(exc)}") from None
    if spec.name != cell:
        raise InvalidInput(f"{path}: cell name {spec.name!r} does not match the file name (expected {cell!r})")
    if len(_CELLS) >= 64:  # edited files' old texts: dropped now and then
        _CELLS.clear()
    _CELLS[(cell, text)] = spec
    return spec


def cell_specs(stacks_dir: Path) -> dict[str, CellSpec]:
    """Every cell of the project, the default cell first (its defaults when it
    has no stack file yet: the first provision writes it)."""
    cells = {DEFAULT_CELL: read_cell(stacks_dir) or CellSpec()}
    for path in sorted(stacks_dir.glob(f"Pulumi.{CELL_STACK_PREFIX}*.yaml")):
        name = cell_of_stack(path.name.removeprefix("Pulumi.").removesuffix(".yaml"))
        if name is not None and name != DEFAULT_CELL:
            cells[name] = read_cell(stacks_dir, name)
    return cells


def tenant_stacks(stacks_dir: Path) -> dict[str, dict[str, Path]]:
    """Tenant id -> {stack: file} of every committed tenant stack (cells
    excluded), key generation 0 first. A name no tenant stack has (`x.y`) is
    kept under its whole name, so the id checks refuse it."""
    out: dict[str, dict[str, Path]] = {}
    found = []
    for path in stacks_dir.glob("Pulumi.*.yaml"):
        stack = path.name.removeprefix("Pulumi.").removesuffix(".yaml")
        if cell_of_stack(stack) is None:
            tenant_id, generation = stack_tenant(stack) or (stack, 0)
            found.append((tenant_id, generation, stack, path))
    for tenant_id, _, stack, path in sorted(found):
        out.setdefault(tenant_id, {})[stack] = path
    return out


def tenant_stack_files(stacks_dir: Path, current: Mapping[str, str] | None = None) -> dict[str, Path]:
    """Tenant id -> the file of its current stack, for every committed tenant.
    ``current``: tenant id -> the stack its registry record names (an open
    move's second stack, or the one a finalized move left, is the tenant's,
    never another tenant nor an orphan); without it, the lowest generation."""
    current = current or {}
    out = {}
    for tenant_id, files in tenant_stacks(stacks_dir).items():
        out[tenant_id] = files.get(current.get(tenant_id, ""), next(iter(files.values())))
    return out


def stray_stack(stack: str, record: TenantRecord | None) -> str | None:
    """Why the committed file of tenant stack ``stack`` is none of its tenant's
    stacks (``record``: the tenant's, None when it has none), or None. Only a
    key generation's (`acme.k1`) can be: `tenantctl move` writes it for a move
    to another account or region, and the tenant's record names it from then on."""
    tenant_id, generation = stack_tenant(stack) or (stack, 0)
    if generation == 0 or (record is not None and stack in record.stacks):
        return None
    whose = (f"tenant {tenant_id!r} is not in the registry (a new tenant's stack file is Pulumi.{tenant_id}.yaml)"
             if record is None else f"tenant {tenant_id!r} has no open move to it (its stacks: "
                                    f"{', '.join(record.stacks)})")
    return (f"Pulumi.{stack}.yaml is the stack of key generation {generation} of tenant {tenant_id!r}, written by "
            f"`tenantctl move` for a move to another account or region, but {whose}: remove the file")


def tenant_stack_cell(stacks_dir: Path, stack: str, config: dict | None = None) -> str | None:
    """The cell a tenant stack is applied in: the one whose platform stack its file's
    `tenantctl:platformStack` names (the default cell's when it names none; ``config``: the file's,
    when read already). Not always the record's: an open move's stack is its target cell's once the
    move wrote its target spec, and a move to another account or region has a stack in each cell."""
    if config is None:
        path = stack_file(stacks_dir, stack)
        config = read_config(path) if path.exists() else {}
    return cell_of_stack(str(config.get(PLATFORM_REF_KEY) or cell_stack(DEFAULT_CELL)).rsplit("/", 1)[-1])


def provider_config(stacks_dir: Path, stack: str, config: dict | None = None) -> dict[str, Any]:
    """The config a stack runs with besides its own file, from its cell (a cell's
    own, or the cell a tenant's `tenantctl:platformStack` names): the cell's
    account as pulumi-aws's `aws:assumeRoles` (none for the target's own
    account) and, for a tenant stack, the cell's alarm subscriptions
    (`tenantctl:alarmSubscriptions`, none when it has none). Both engines lay it
    over the stack file, so what is the cell's is written once, in the cell's file."""
    cell = cell_of_stack(stack)
    if cell is None:
        cell = tenant_stack_cell(stacks_dir, stack, config)
    spec = read_cell(stacks_dir, cell) if cell is not None else None
    laid: dict[str, Any] = {}
    if spec is not None and spec.account_role_arn:
        laid[ASSUME_ROLES_KEY] = [{"roleArn": spec.account_role_arn, "sessionName": SESSION_NAME}]
    if spec is not None and spec.alarm_subscriptions and cell_of_stack(stack) is None:
        laid[ALARM_SUBSCRIPTIONS_KEY] = [s.model_dump() for s in spec.alarm_subscriptions]
    return laid
