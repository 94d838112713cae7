"""Shared by the fault / wall tests: a `tenantctl` CLI runner in a project
directory of its own on the session's sandbox (armed with the faults of
tests/faults when a run is given fault variables), and an inventory of
what the sandbox itself (moto + PostgreSQL) holds for a tenant, looked up
there and never taken from tenantctl's output."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import psycopg
from faults import FAULT_ENVS, LAUNCHER

from tenantctl import naming

REPO = Path(__file__).resolve().parents[2]


def slot_drift(workspace, cell: str = "default") -> dict[str, int]:
    """The cell's counter minus a recount of its records, per tier (no counter yet: none, the first slot
    taken makes it from a recount)."""
    recount = workspace.registry.recount(cell)
    counted = workspace.registry.cell_counts([cell])[cell]
    return {tier: (counted[0].get(tier, 0) - n if counted else 0) for tier, n in recount.items()}


def run_id() -> str:
    """A short suffix making this session's tenant ids unique (ids are never reused)."""
    return secrets.token_hex(2)


@dataclass
class Run:
    """One finished `tenantctl` process."""

    args: tuple[str, ...]
    pid: int
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    def __str__(self) -> str:
        return f"tenantctl {' '.join(self.args)} -> {self.returncode} (pid {self.pid})\n{self.stderr[-3000:]}"


@dataclass
class Cli:
    """`python -m tenantctl ...` with cwd = a project dir of our own and
    TENANTCTL_SANDBOX_DIR = the session's sandbox. A run given a
    TENANTCTL_FAULT_* variable goes through the faults launcher instead
    (``launcher=True`` / ``False`` forces either)."""

    root: Path
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def create(cls, sandbox, root: Path) -> Cli:
        root.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "Pulumi.yaml", root / "Pulumi.yaml")
        (root / "stacks").mkdir(exist_ok=True)
        env = {**os.environ, "TENANTCTL_SANDBOX_DIR": str(sandbox.state_dir), "PYTHONWARNINGS": "ignore"}
        for name in ("TENANTCTL_TARGET", *FAULT_ENVS):
            env.pop(name, None)
        return cls(root, env)

    def start(self, *args: str, env: dict[str, str] | None = None, launcher: bool | None = None,
              cwd: Path | None = None, new_session: bool = False) -> subprocess.Popen:
        """``new_session``: in a process group of its own (a test signals the whole group)."""
        if launcher is None:
            launcher = any((env or {}).get(name) for name in FAULT_ENVS)
        command = [str(LAUNCHER)] if launcher else ["-m", "tenantctl"]
        # No stdin and no terminal: a command that would ask (deprovision without --yes) is refused (exit 13).
        return subprocess.Popen([sys.executable, *command, *args], cwd=cwd or self.root,
                                env={**self.env, **(env or {})}, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=new_session)

    def __call__(self, *args: str, env: dict[str, str] | None = None, timeout: float = 600,
                 launcher: bool | None = None, cwd: Path | None = None) -> Run:
        """``cwd``: run there instead of the project root."""
        proc = self.start(*args, env=env, launcher=launcher, cwd=cwd)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        return Run(args, proc.pid, proc.returncode, out, err)

    def stack_file(self, tenant_id: str) -> Path:
        return self.root / "stacks" / f"Pulumi.{tenant_id}.yaml"


def aws(sandbox, service: str, region: str | None = None, account: str | None = None):
    """A client on the sandbox: the home account, or ``account`` (a role assumed
    there: moto serves assumed-role credentials in the role's account)."""
    creds = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    if account is not None:
        sts = boto3.client("sts", endpoint_url=sandbox.aws_endpoint_url, region_name=sandbox.region, **creds)
        got = sts.assume_role(RoleArn=f"arn:aws:iam::{account}:role/inventory", RoleSessionName="tests")["Credentials"]
        creds = {"aws_access_key_id": got["AccessKeyId"], "aws_secret_access_key": got["SecretAccessKey"],
                 "aws_session_token": got["SessionToken"]}
    return boto3.client(service, endpoint_url=sandbox.aws_endpoint_url, region_name=region or sandbox.region, **creds)


def listed(client, operation: str, key: str, **kwargs) -> list:
    """Every page's ``key`` items of a list call (IAM and SNS answer 100 a page: a
    long session's sandbox holds more)."""
    return [item for page in client.get_paginator(operation).paginate(**kwargs) for item in page.get(key, [])]


def platform_outputs(sandbox) -> dict[str, Any]:
    return json.loads((Path(sandbox.state_dir) / "local-engine" / "platform.json").read_text())["outputs"]


def registry_record(sandbox, tenant_id: str) -> dict[str, Any] | None:
    """The tenant's record as the registry table holds it (None: no item)."""
    table = platform_outputs(sandbox)["registry_table"]
    item = aws(sandbox, "dynamodb").get_item(TableName=table, Key={"tenant_id": {"S": tenant_id}},
                                             ConsistentRead=True).get("Item")
    return json.loads(item["record"]["S"]) if item else None


def write_record(sandbox, record: Any) -> None:
    """Put a record (or its dict) straight into the registry table, past the registry writer: as a crashed
    run on another machine, or an older tenantctl, would leave it."""
    from tenant_runtime.registry import record_to_item
    from tenantctl.models import TenantRecord

    table = platform_outputs(sandbox)["registry_table"]
    aws(sandbox, "dynamodb").put_item(TableName=table, Item=record_to_item(TenantRecord.model_validate(record)))


def cell_count(sandbox, cell: str = "default", tier: str = "pooled") -> int:
    """Tenants holding a slot in ``cell``, as its counter item in the registry says."""
    table = platform_outputs(sandbox)["registry_table"]
    item = aws(sandbox, "dynamodb").get_item(TableName=table, Key={"tenant_id": {"S": f"cell#{cell}"}},
                                             ConsistentRead=True).get("Item") or {}
    return int(item.get(tier, {}).get("N", 0))


def lifecycle_rules(sandbox, bucket: str) -> list[dict[str, Any]]:
    s3 = aws(sandbox, "s3")
    try:
        return s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    except s3.exceptions.ClientError as exc:
        if exc.response["Error"]["Code"] == "NoSuchLifecycleConfiguration":
            return []
        raise


def tenant_rule_ids(sandbox, bucket: str, tenant_id: str) -> set[str]:
    prefix = naming.s3_prefix(tenant_id)
    """A tenant's own (pre-cells) rules: its id in the rule id, its prefix in the filter."""
    return {r["ID"] for r in lifecycle_rules(sandbox, bucket)
            if r["ID"].startswith(f"tenantctl-{tenant_id}-")
            and r.get("Filter", {}).get("Prefix", "").startswith(prefix)}


def inventory(sandbox, tenant_id: str, region: str | None = None, account: str | None = None,
              database: str | None = None) -> dict[str, int]:
    """How many live resources of each kind the sandbox holds for the tenant in
    one account and region (default: the home account and the sandbox's
    region): everything tagged tenant=<id> (KMS keys pending deletion and
    secrets scheduled for deletion are not live), plus the IAM role, and the
    PostgreSQL schema and role (in ``database``, default the default cell's)."""
    kinds: Counter[str] = Counter()

    def client(service: str):
        return aws(sandbox, service, region, account)

    tagging = client("resourcegroupstaggingapi")
    kms, sm = client("kms"), client("secretsmanager")
    for item in listed(tagging, "get_resources", "ResourceTagMappingList",
                       TagFilters=[{"Key": "tenant", "Values": [tenant_id]}]):
        arn = item["ResourceARN"]
        service, resource = arn.split(":")[2], arn.split(":", 5)[5]
        kind = f"{service}:{resource.split('/')[0].split(':')[0]}" if service not in ("sqs", "sns") else service
        if kind == "kms:key" and kms.describe_key(KeyId=arn)["KeyMetadata"]["KeyState"] == "PendingDeletion":
            continue
        if service == "secretsmanager":
            try:
                if sm.describe_secret(SecretId=arn).get("DeletedDate"):
                    continue
            except sm.exceptions.ResourceNotFoundException:
                continue
        kinds[kind] += 1
    iam = client("iam")
    try:
        iam.get_role(RoleName=naming.iam_role_name(tenant_id))
        kinds["iam:role"] += 1
    except iam.exceptions.NoSuchEntityException:
        pass
    platform = platform_outputs(sandbox)
    dbname = database or platform["db_name"]
    with psycopg.connect(sandbox.pg_dsn(dbname), autocommit=True) as conn:
        kinds["pg:schema"] += conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s",
                                           (naming.schema_name(tenant_id),)).fetchone()[0]
        kinds["pg:role"] += conn.execute("SELECT count(*) FROM pg_roles WHERE rolname = %s",
                                         (naming.db_role_name(tenant_id),)).fetchone()[0]
    kinds.update(_rotation_and_db_access(tenant_id, client("ec2"), kms, sm))
    return {k: v for k, v in sorted(kinds.items()) if v}


def _rotation_and_db_access(tenant_id: str, ec2, kms, sm) -> Counter[str]:
    """The rule admitting the tenant's group into a shared database's group (any
    group of the account and region that is not the tenant's own: each cell has
    its shared database), the rotation function's grant on the tenant key, the
    secret's rotation."""
    kinds: Counter[str] = Counter()
    own = {g["GroupId"] for g in ec2.describe_security_groups(
        Filters=[{"Name": "tag:tenant", "Values": [tenant_id]}])["SecurityGroups"]}
    rules = ec2.describe_security_group_rules()["SecurityGroupRules"]
    kinds["ec2:db-ingress-rule"] = sum((r.get("ReferencedGroupInfo") or {}).get("GroupId") in own for r in rules
                                       if not r.get("IsEgress") and r["GroupId"] not in own)
    try:
        key = kms.describe_key(KeyId=naming.kms_alias(tenant_id))["KeyMetadata"]
        if key["KeyState"] != "PendingDeletion":
            kinds["kms:grant"] = len(kms.list_grants(KeyId=key["KeyId"])["Grants"])
    except kms.exceptions.NotFoundException:
        pass
    try:
        secret = sm.describe_secret(SecretId=naming.secret_name(tenant_id))
        kinds["secretsmanager:rotation"] = int(bool(secret.get("RotationEnabled")) and not secret.get("DeletedDate"))
    except sm.exceptions.ResourceNotFoundException:
        pass
    return kinds


# A pooled tenant, exactly once each: one key (+ its alias, checked apart), two
# queues (jobs + DLQ), one role, one secret (rotated, by a grant on the key),
# one schema + role, its alarms and topic; no security group or rule (its
# workloads use the cell's pooled-clients group). No lifecycle rule: its cell's bucket
# holds one rule per retention class for every tenant.
POOLED = {
    "cloudwatch:alarm": 2, "iam:role": 1, "kms:grant": 1,
    "kms:key": 1, "pg:role": 1, "pg:schema": 1, "secretsmanager:rotation": 1,
    "secretsmanager:secret": 1, "sns": 1, "sqs": 2,
}


def alias_target(sandbox, tenant_id: str) -> str | None:
    """The key the tenant's alias points at (None: no alias)."""
    kms = aws(sandbox, "kms")
    try:
        return kms.describe_key(KeyId=naming.kms_alias(tenant_id))["KeyMetadata"]["Arn"]
    except kms.exceptions.NotFoundException:
        return None


def live_tenant_keys(sandbox, tenant_id: str) -> list[str]:
    kms, tagging = aws(sandbox, "kms"), aws(sandbox, "resourcegroupstaggingapi")
    arns = [m["ResourceARN"] for m in listed(tagging, "get_resources", "ResourceTagMappingList",
                                             TagFilters=[{"Key": "tenant", "Values": [tenant_id]}],
                                             ResourceTypeFilters=["kms"])]
    return [a for a in arns if kms.describe_key(KeyId=a)["KeyMetadata"]["KeyState"] != "PendingDeletion"]


def engine_state(sandbox, tenant_id: str) -> Path:
    return Path(sandbox.state_dir) / "local-engine" / f"{tenant_id}.json"
