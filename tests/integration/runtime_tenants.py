"""Helpers for the runtime integration tests: tenants provisioned by the real
operation (the session's ``provision_tenant`` fixture: LocalEngine on the
sandbox), tokens for them, and raw connections as a tenant's role with the
credentials from the tenant's secret (what a buggy application would hold).

Tenant ids start with ``rt`` (ids are shared by the whole test session):
``rt-a`` and ``rt-b`` are pooled neighbours, ``rt-a-corp`` is ``rt-a``'s prefix
twin, ``rt-ded`` is a dedicated tenant (its own database). ``rt-ws`` (the
``ws_tenant`` fixture, provisioned only by the modules that use it) has two
workspaces, ``finance`` and ``legal``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import boto3
import jwt
import psycopg
import pytest
from waiting import wait_for

from tenant_runtime import JWTSettings, TenantRecord, TenantRuntime

JWT_SECRET = "runtime-integration-secret-0123456789"
AUDIENCE = "runtime-tests"
TENANTS = {"a": ("rt-a", {}), "b": ("rt-b", {}), "twin": ("rt-a-corp", {}), "d": ("rt-ded", {"tier": "dedicated"})}
WS_TENANT, WORKSPACES = "rt-ws", ("finance", "legal")


def token(tenant_id: str, **claims: Any) -> str:
    body = {"sub": f"user-of-{tenant_id}", "tenant_id": tenant_id, "aud": AUDIENCE, "exp": time.time() + 600, **claims}
    return jwt.encode(body, JWT_SECRET, algorithm="HS256")


def jwt_settings() -> JWTSettings:
    return JWTSettings(key=JWT_SECRET, algorithms=("HS256",), audience=AUDIENCE)


@contextmanager
def sandbox_runtime(sandbox: Any, workspace: Any, **settings: Any) -> Iterator[TenantRuntime]:
    """A runtime on the sandbox's registry (for a file that provisions its own tenants), closed after."""
    rt = TenantRuntime(jwt_settings(), workspace.ensure_platform()["registry_table"],
                       endpoint_url=sandbox.aws_endpoint_url, region=sandbox.region, **settings)
    try:
        yield rt
    finally:
        rt.close()


@dataclass
class RuntimeEnv:
    sandbox: Any
    registry_table: str
    ids: dict[str, str]  # short key -> tenant id
    tenants: dict[str, TenantRecord] = field(default_factory=dict)  # tenant id -> record

    def record(self, key: str) -> TenantRecord:
        return self.tenants[self.ids[key]]

    def client(self, service: str):
        return boto3.client(service, endpoint_url=self.sandbox.aws_endpoint_url, region_name=self.sandbox.region)

    def token(self, tenant_id: str, **claims: Any) -> str:
        return token(tenant_id, **claims)

    def admin(self, database: str | None = None) -> psycopg.Connection:
        return psycopg.connect(self.sandbox.pg_dsn(database), autocommit=True)

    def secret(self, tenant_id: str, workspace: str | None = None) -> dict[str, Any]:
        """The tenant's (or its workspace's) store credentials, read the way the runtime reads them."""
        resources = self.tenants[tenant_id].resources
        arn = (resources.workspaces[workspace] if workspace else resources).store.secret_arn
        return json.loads(self.client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"])

    def terminate_logins(self, tenant_id: str) -> int:
        """As admin: end every backend of the tenant's login (as a restart or an
        idle timeout would) and wait until they are gone; how many there were."""
        user = self.secret(tenant_id)["username"]
        with self.admin() as conn:
            ended = conn.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = %s",
                                 (user,)).fetchone()[0]
            wait_for(f"the backends of {user} gone", lambda: not conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (user,)).fetchone()[0])
        return ended

    def connect_as(self, tenant_id: str, database: str | None = None, workspace: str | None = None,
                   **kwargs: Any) -> psycopg.Connection:
        """A raw connection as the tenant's (or workspace's) role, bypassing every runtime check."""
        s = self.secret(tenant_id, workspace)
        return psycopg.connect(host=s["host"], port=s["port"], dbname=database or s["dbname"],
                               user=s["username"], password=s["password"], **kwargs)


# -- fixtures (import them into a test module: `from runtime_tenants import runtime, runtime_env`) --

@pytest.fixture(scope="module")
def runtime_env(sandbox, workspace, provision_tenant) -> RuntimeEnv:
    env = RuntimeEnv(sandbox=sandbox, registry_table=workspace.ensure_platform()["registry_table"],
                     ids={key: tid for key, (tid, _) in TENANTS.items()})
    for tid, fields in TENANTS.values():
        env.tenants[tid] = provision_tenant(tid, **fields)
    return env


@pytest.fixture(scope="module")
def ws_tenant(runtime_env, provision_tenant) -> TenantRecord:
    """``rt-ws`` with its workspaces (one provision for the session)."""
    record = provision_tenant(WS_TENANT, workspaces=[{"name": ws} for ws in WORKSPACES])
    runtime_env.tenants[WS_TENANT] = record
    return record


@pytest.fixture(scope="module")
def runtime(runtime_env):
    rt = TenantRuntime(jwt_settings(), runtime_env.registry_table, endpoint_url=runtime_env.sandbox.aws_endpoint_url,
                       region=runtime_env.sandbox.region)
    yield rt
    rt.close()
