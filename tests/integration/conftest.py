"""The integration fixture: one real sandbox (moto server + PostgreSQL) per test
session, in a temporary state directory, stopped at the end."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from runtime_tenants import sandbox_runtime

from tenant_runtime import TenantRuntime
from tenantctl.models import TenantRecord, TenantSpec
from tenantctl.operations.deprovision import deprovision
from tenantctl.operations.provision import provision
from tenantctl.sandbox import Sandbox, SandboxEndpoints
from tenantctl.workspace import Workspace

HERE = Path(__file__).parent
REPO = HERE.parents[1]


# Modules that provision many tenants and remove them afterwards, run first:
# a session's (an xdist worker's) one platform is an account with AWS's default
# quotas (5 VPCs, for instance), which the tenants other modules keep for the
# session use up. The workers take modules in this order (--no-loadscope-reorder).
FIRST = ("test_throttling.py", "test_walls.py", "test_policy_gate.py", "test_usage.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # A conftest's hook sees the whole session's items: mark only the ones under here.
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.integration)
    ours = [i for i, item in enumerate(items) if HERE in item.path.parents]
    if ours:
        block = [items[i] for i in ours]
        block.sort(key=lambda item: item.path.name not in FIRST)  # stable: the rest keep their order
        for i, item in zip(ours, block, strict=True):
            items[i] = item


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxEndpoints]:
    """SandboxEndpoints of a running sandbox. For the session, boto3 (AWS_* env)
    and tenantctl (TENANTCTL_SANDBOX_DIR) point at it; the environment is
    restored afterwards."""
    box = Sandbox(tmp_path_factory.mktemp("sandbox-state"))
    try:
        endpoints = box.up()
        with pytest.MonkeyPatch.context() as mp:
            for name, value in endpoints.aws_env().items():
                mp.setenv(name, value)
            mp.setenv("TENANTCTL_SANDBOX_DIR", str(endpoints.state_dir))
            # Credentials from a profile or a session token would be sent instead of moto's.
            for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
                mp.delenv(name, raising=False)
            yield endpoints
    finally:
        box.down()


@pytest.fixture(scope="session")
def project(sandbox: SandboxEndpoints, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project directory of the session's own: the repo's Pulumi.yaml and an
    empty stacks/ (the platform stack file is written on first use)."""
    root = tmp_path_factory.mktemp("project")
    shutil.copy(REPO / "Pulumi.yaml", root / "Pulumi.yaml")
    (root / "stacks").mkdir()
    return root


@pytest.fixture(scope="session")
def tenantctl_cli(project: Path, sandbox: SandboxEndpoints) -> Callable[..., subprocess.CompletedProcess[str]]:
    """tenantctl_cli(*args): the CLI as a subprocess in the session's project
    (the one the ``workspace`` fixture opens), on the session's sandbox."""
    env = {**os.environ, "TENANTCTL_SANDBOX_DIR": str(sandbox.state_dir), "PYTHONWARNINGS": "ignore"}
    env.pop("TENANTCTL_TARGET", None)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "tenantctl", *args], cwd=project, env=env,
                              capture_output=True, text=True, timeout=600)

    return run


@pytest.fixture(scope="session")
def workspace(project: Path) -> Workspace:
    """The Workspace `tenantctl` commands would open in `project` (sandbox target)."""
    return Workspace(project_dir=project, cwd=project)


@pytest.fixture(scope="session")
def provision_tenant(workspace: Workspace) -> Callable[..., TenantRecord]:
    """provision_tenant(id, **spec_fields) -> the active TenantRecord, provisioned
    once per session by the real operation (LocalEngine on the sandbox)."""
    done: dict[str, TenantRecord] = {}

    def provision_once(tenant_id: str, **fields: Any) -> TenantRecord:
        if tenant_id not in done:
            spec = TenantSpec.model_validate({"id": tenant_id, **fields})
            done[tenant_id], _ = provision(workspace, spec)
        return done[tenant_id]

    return provision_once


@pytest.fixture
def short_lived_tenant(workspace: Workspace) -> Iterator[Callable[..., TenantRecord]]:
    """short_lived_tenant(id, **spec_fields) -> the active TenantRecord, deprovisioned
    (no final backup) after the test: a dedicated tenant's VPC is one of the five
    the session's account has in its region, which later modules need."""
    made: list[str] = []

    def provision_now(tenant_id: str, **fields: Any) -> TenantRecord:
        record, _ = provision(workspace, TenantSpec.model_validate({"id": tenant_id, **fields}))
        made.append(tenant_id)
        return record

    yield provision_now
    for tenant_id in made:
        deprovision(workspace, tenant_id, final_backup=False)


@pytest.fixture(scope="module")
def runtime(sandbox: SandboxEndpoints, workspace: Workspace) -> Iterator[TenantRuntime]:
    """A runtime on the sandbox's registry, for a module that provisions its own
    tenants (the ones on ``runtime_env``'s import ``runtime_tenants``' own)."""
    with sandbox_runtime(sandbox, workspace) as rt:
        yield rt


@pytest.fixture
def aws_calls(monkeypatch) -> list[str]:
    """Every AWS call this process makes from here on, as `service.Operation`."""
    from botocore.client import BaseClient

    calls: list[str] = []
    make_api_call = BaseClient._make_api_call

    def counted(self, operation, params):
        calls.append(f"{self.meta.service_model.service_name}.{operation}")
        return make_api_call(self, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", counted)
    return calls
