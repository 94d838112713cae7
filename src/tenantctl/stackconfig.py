"""stacks/Pulumi.<stack>.yaml: the committed desired state, rendered from templates/.

The files are what CI reviews and `apply` reconciles, so they hold every option
explicitly (defaults included) and read back into the same TenantSpec.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from tenantctl.errors import InvalidInput
from tenantctl.files import write_atomic
from tenantctl.models import PlatformSpec, TenantSpec, describe_validation_error
from tenantctl.naming import PLATFORM_STACK, require_valid


def stack_file(stacks_dir: Path, stack: str) -> Path:
    return stacks_dir / f"Pulumi.{stack}.yaml"


def _dump(data: dict) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False).rstrip("\n")


def render_tenant(spec: TenantSpec, platform_stack: str = PLATFORM_STACK) -> str:
    from tenantctl.templates import render

    return render("stack.yaml.j2", spec=spec, platform_stack=platform_stack, tenant_yaml=_dump(spec.desired()))


def render_platform(spec: PlatformSpec) -> str:
    from tenantctl.templates import render

    body = spec.model_dump(mode="json", exclude_none=True)
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
        wanted = yaml.safe_load(text)
        text = yamledit.edit(current, lambda doc: yamledit.set_tree(doc, wanted, prune_from=_OWNED_DEPTH))
        if text == current:
            return False
    write_atomic(path, text)
    return True


def write_tenant(stacks_dir: Path, spec: TenantSpec) -> bool:
    """Write the tenant's stack file; True when its content changed."""
    return _write(stack_file(stacks_dir, require_valid(spec.id)), render_tenant(spec))


def write_platform(stacks_dir: Path, spec: PlatformSpec) -> bool:
    return _write(stack_file(stacks_dir, PLATFORM_STACK), render_platform(spec))


def _config(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{path}: not valid YAML ({exc.problem} at line {exc.problem_mark.line + 1})") from None
    return data.get("config") or {}


def program_config(path: Path, project: str) -> dict:
    """The stack file's config as a program run in-process gets it: every key
    namespaced (``tenant`` in project ``tenantctl`` is ``tenantctl:tenant``)."""
    return {(k if ":" in k else f"{project}:{k}"): v for k, v in _config(path).items()}


def read_tenant(path: Path) -> TenantSpec:
    raw = _config(path).get("tenantctl:tenant")
    if not isinstance(raw, dict):
        raise InvalidInput(f"{path}: missing the `tenantctl:tenant` mapping")
    try:
        spec = TenantSpec.model_validate(raw)
    except ValidationError as exc:
        raise InvalidInput(f"{path}: {describe_validation_error(exc)}") from None
    expected = path.name.removeprefix("Pulumi.").removesuffix(".yaml")
    if spec.id != expected:
        raise InvalidInput(f"{path}: tenant id {spec.id!r} does not match the file name (expected {expected!r})")
    return spec


def read_platform(stacks_dir: Path) -> PlatformSpec | None:
    path = stack_file(stacks_dir, PLATFORM_STACK)
    if not path.exists():
        return None
    try:
        return PlatformSpec.model_validate(_config(path).get("tenantctl:platform") or {})
    except ValidationError as exc:
        raise InvalidInput(f"{path}: {describe_validation_error(exc)}") from None


def tenant_stack_files(stacks_dir: Path) -> dict[str, Path]:
    """Tenant id -> stack file, for every committed tenant (platform excluded)."""
    out = {}
    for path in sorted(stacks_dir.glob("Pulumi.*.yaml")):
        stack = path.name.removeprefix("Pulumi.").removesuffix(".yaml")
        if stack != PLATFORM_STACK:
            out[stack] = path
    return out
