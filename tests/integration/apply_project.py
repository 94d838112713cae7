"""A project directory of its own (its own stacks/, the session's sandbox and
registry) with `tenantctl` run in it as CI runs it: for the `apply` tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tenantctl.models import CellSpec, TenantSpec
from tenantctl.stackconfig import write_cell, write_tenant
from tenantctl.workspace import Workspace

REPO = Path(__file__).resolve().parents[2]


class Project:
    """A project directory with its own stacks/, and `tenantctl` run in it."""

    def __init__(self, root: Path, sandbox) -> None:
        self.root = root
        self.sandbox = sandbox
        self.env = {**os.environ, "TENANTCTL_SANDBOX_DIR": str(sandbox.state_dir), "PYTHONWARNINGS": "ignore",
                    "COLUMNS": "200"}
        self.env.pop("TENANTCTL_TARGET", None)

    @property
    def stacks(self) -> Path:
        return self.root / "stacks"

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "tenantctl", *args], cwd=self.root, env=self.env,
                              capture_output=True, text=True, timeout=900)

    def apply(self, *args: str) -> tuple[int, dict, str]:
        """`tenantctl apply --json ARGS` -> (exit code, summary, stderr)."""
        done = self.cli("apply", "--json", *args)
        try:
            summary = json.loads(done.stdout)
        except json.JSONDecodeError:
            pytest.fail(f"apply {args}: exit {done.returncode}, no JSON summary\n{done.stdout}\n{done.stderr}")
        assert summary["exit_code"] == done.returncode
        return done.returncode, summary, done.stderr

    def write(self, tenant_id: str, **fields) -> TenantSpec:
        spec = TenantSpec.model_validate({"id": tenant_id, **fields})
        write_tenant(self.stacks, spec)
        return spec

    def workspace(self) -> Workspace:
        return Workspace(project_dir=self.root, cwd=self.root)

    @classmethod
    def make(cls, root: Path, sandbox) -> Project:
        """A project at ``root``: the repository's Pulumi.yaml and a committed platform
        stack file, as in a real repository (apply must never treat it as a tenant)."""
        shutil.copy(REPO / "Pulumi.yaml", root / "Pulumi.yaml")
        (root / "stacks").mkdir()
        write_cell(root / "stacks", CellSpec())
        return cls(root, sandbox)
