"""Where tenants are provisioned: the local sandbox (the default) or a real AWS
account through Pulumi.

Sources, highest precedence first:
1. environment: TENANTCTL_TARGET (sandbox|aws), AWS_REGION (or AWS_DEFAULT_REGION),
   AWS_PROFILE, PULUMI_BACKEND_URL, TENANTCTL_SECRETS_PROVIDER, PULUMI_ORG,
   TENANTCTL_PULUMI_ROOT, TENANTCTL_SANDBOX_DIR — each overrides one field;
2. `tenantctl.toml`, in the working directory or the nearest parent up to the
   project root (the directory holding Pulumi.yaml);
3. the sandbox.

Only TENANTCTL_TARGET or the file's `target` switch to aws: a shell that merely
has AWS_PROFILE or PULUMI_BACKEND_URL set stays on the sandbox.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tenantctl.errors import InvalidInput
from tenantctl.project import PROJECT_FILE

CONFIG_FILE = "tenantctl.toml"

Kind = Literal["sandbox", "aws"]


class AwsTarget(BaseModel):
    """A real AWS account, reached by the Pulumi CLI (Automation API)."""

    model_config = ConfigDict(extra="forbid")

    region: str | None = None
    profile: str | None = None
    backend_url: str | None = Field(
        None, description="file://, s3://, or Pulumi Cloud (https://…); None: the CLI's login")
    secrets_provider: str | None = Field(None, description="awskms://… for real use, passphrase for local trials")
    org: str | None = Field(None, description="Pulumi Cloud organisation: stacks become <org>/tenantctl/<stack>")
    pulumi_root: Path | None = Field(None, description="where `tenantctl setup pulumi --root` installed the CLI")


class SandboxTarget(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state_dir: Path | None = None


class Target(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Kind = "sandbox"
    aws: AwsTarget = Field(default_factory=AwsTarget)
    sandbox: SandboxTarget = Field(default_factory=SandboxTarget)
    source: str = Field("default", description="where the kind came from: default, env, or the file's path")


# env var -> (section, field); the first listed wins when several name one field.
ENV_FIELDS: list[tuple[str, str, str]] = [
    ("AWS_REGION", "aws", "region"),
    ("AWS_DEFAULT_REGION", "aws", "region"),
    ("AWS_PROFILE", "aws", "profile"),
    ("PULUMI_BACKEND_URL", "aws", "backend_url"),
    ("TENANTCTL_SECRETS_PROVIDER", "aws", "secrets_provider"),
    ("PULUMI_ORG", "aws", "org"),
    ("TENANTCTL_PULUMI_ROOT", "aws", "pulumi_root"),
    ("TENANTCTL_SANDBOX_DIR", "sandbox", "state_dir"),
]


def find_config(cwd: Path | None = None) -> Path | None:
    """tenantctl.toml in cwd or a parent, not looking above the project root."""
    start = (cwd or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / CONFIG_FILE).is_file():
            return folder / CONFIG_FILE
        if (folder / PROJECT_FILE).is_file():
            return None
    return None


def _read_file(path: Path) -> dict:
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"{path}: not valid TOML ({exc})") from None
    unknown = set(data) - {"target", "aws", "sandbox"}
    if unknown:
        raise InvalidInput(f"{path}: unknown key(s) {', '.join(sorted(unknown))} (expected target, [aws], [sandbox])")
    out: dict = {"aws": dict(data.get("aws") or {}), "sandbox": dict(data.get("sandbox") or {})}
    if "target" in data:
        out["kind"] = data["target"]
        out["source"] = str(path)
    # Relative paths in the file are relative to the file, not to wherever tenantctl runs.
    for section, field in (("aws", "pulumi_root"), ("sandbox", "state_dir")):
        value = out[section].get(field)
        if isinstance(value, str) and not Path(value).expanduser().is_absolute():
            out[section][field] = str(path.parent / value)
    return out


def load_target(cwd: Path | None = None, environ: Mapping[str, str] | None = None) -> Target:
    env = os.environ if environ is None else environ
    path = find_config(cwd)
    data = _read_file(path) if path else {"aws": {}, "sandbox": {}}
    seen: set[tuple[str, str]] = set()
    for var, section, field in ENV_FIELDS:
        value = env.get(var)
        if value and (section, field) not in seen:
            data[section][field] = value
            seen.add((section, field))
    if env.get("TENANTCTL_TARGET"):
        data["kind"] = env["TENANTCTL_TARGET"].strip().lower()
        data["source"] = "env"
    try:
        return Target.model_validate(data)
    except ValidationError as exc:
        from tenantctl.models import describe_validation_error

        where = "TENANTCTL_TARGET / environment" if data.get("source") == "env" else str(path or "target")
        raise InvalidInput(f"{where}: {describe_validation_error(exc)}") from None


def render_config(target: Target) -> str:
    """The tenantctl.toml that pins `target` (what `tenantctl target set` writes)."""
    lines = [f'target = "{target.kind}"']
    for section, model in (("aws", target.aws), ("sandbox", target.sandbox)):
        values = {k: v for k, v in model.model_dump(mode="json").items() if v is not None}
        if values:
            lines += ["", f"[{section}]"] + [f"{k} = {_toml_string(str(v))}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
