"""Every name a tenant id flows into, and the rules those names impose.

The id is valid only if every derived name is valid, so the id's rules are the
intersection of S3, KMS, SQS, RDS, PostgreSQL, IAM and Pulumi naming rules. Each
rule is checked separately so that a refusal names the rule it broke.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

from tenant_runtime.models import (  # records default to it, the runtime keys and confines by them: one definition
    DEFAULT_CELL,
    WORKSPACE_SEP,
    tenant_prefix,
    workspace_key,
    workspace_prefix,
)
from tenantctl.errors import InvalidInput

# Ids never used for tenants: they name shared things or collide with provider
# reserved words (PostgreSQL `pg_*`, KMS `alias/aws/*`, S3 `xn--`/`sthree-`).
RESERVED_IDS = frozenset(
    {"platform", "admin", "public", "root", "default", "system", "shared",
     "registry", "tenantctl", "tenant", "aws", "amazon", "postgres", "template0",
     "template1", "test", "null", "none", "cell"}
)
# `cell-` names the stacks and shared resources of cells (`tenantctl-cell-<name>`
# is a cell's database instance), so no tenant id may start with it.
RESERVED_PREFIXES = ("pg", "aws-", "amazon-", "xn--", "sthree-", "cell-")

# The stack of what tenants share (network, database, bucket, registry): the
# default cell, which is also the home of the registry.
PLATFORM_STACK = "platform"
CELL_STACK_PREFIX = "cell-"
MAX_CELL_NAME = 20  # tenantctl-cell-<name>-<account>-<region> stays within S3's 63
# Names `cell add` refuses for a new cell: `platform` is the home cell's stack
# (`Pulumi.platform.yaml`, `tenantctl-platform`), so a cell of that name would read
# as the home in every `--cell`, listing and stack file; `cell` would give the
# stack `cell-cell`, named like the prefix itself.
RESERVED_CELL_NAMES = frozenset({PLATFORM_STACK, "cell"})
_CELL_NAME = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")
# The role the tenant runtime runs as, made by the platform (infra/components/runtime_role.py).
RUNTIME_ROLE = "tenantctl-runtime"

# Suffixes of the `tenantctl-<id>-<suffix>` names a tenant's resources get.
# Knowing them lets ``tenant_ids_in`` tell `acme`'s names from `acme-corp`'s
# without a list of every other tenant.
NAME_SUFFIXES = frozenset({
    "jobs", "jobs-dlq", "app", "final", "alarms", "dlq-depth", "queue-age",
    "db-storage", "db-cpu", "tmp-expiry", "abort-multipart", "archive", "rot",
})


def resource_name(tenant_id: str, suffix: str) -> str:
    """`tenantctl-<id>-<suffix>`, the shape of every other tenant-specific name."""
    if suffix not in NAME_SUFFIXES:
        raise ValueError(f"unknown name suffix {suffix!r}: add it to naming.NAME_SUFFIXES")
    return f"tenantctl-{tenant_id}-{suffix}"


def schema_name(tenant_id: str) -> str:
    return "tenant_" + tenant_id.replace("-", "_")


def db_role_name(tenant_id: str) -> str:
    return schema_name(tenant_id) + "_app"


def database_name(tenant_id: str) -> str:
    """Database of a dedicated tenant (its own RDS instance / sandbox database)."""
    return schema_name(tenant_id)


def kms_alias(tenant_id: str) -> str:
    return f"alias/tenantctl/{tenant_id}"


def s3_prefix(tenant_id: str) -> str:
    # The contract the runtime checks contexts against: one definition.
    return tenant_prefix(tenant_id)


def queue_name(tenant_id: str) -> str:
    return f"tenantctl-{tenant_id}-jobs"


def dlq_name(tenant_id: str) -> str:
    return f"tenantctl-{tenant_id}-jobs-dlq"


def iam_role_name(tenant_id: str, key_generation: int = 0) -> str:
    """`tenantctl-<id>-app`; `tenantctl-<id>.k<N>-app` for the role of key
    generation N >= 1 (the target of a move to another region of the same
    account, where IAM names collide). A dot, not a hyphen: `acme-k1` is a
    valid tenant id, `acme.k1` is not, so no two tenants' roles can meet."""
    return f"tenantctl-{tenant_id}{generation_suffix(key_generation)}-app"


def rds_identifier(tenant_id: str) -> str:
    return f"tenantctl-{tenant_id}"


def secret_name(tenant_id: str) -> str:
    return f"tenantctl/{tenant_id}/db"


# The shared pool's login on the shared database (tenant_runtime.gateway), and its secret.
GATEWAY_ROLE = "tenantctl_gateway"
GATEWAY_SECRET = "tenantctl/platform/gateway"
# The registry and the token denylist (tenant_runtime.revocation) beside it.
REGISTRY_TABLE = "tenantctl-registry"
REVOCATION_TABLE = "tenantctl-revocations"


# A tenant's stacks: `acme` holds key generation 0; a move to another account
# or region builds the tenant again in `acme.k1`, `acme.k2`, ... (docs/moves.md).
# Neither tenant ids nor cell names hold a dot, so the name parses back.
KEY_GEN_SEP = "."
_GENERATION = re.compile(r"^k([1-9][0-9]*)$")
MAX_KEY_GENERATION = 99


def generation_suffix(key_generation: int) -> str:
    if not 0 <= key_generation <= MAX_KEY_GENERATION:
        raise ValueError(f"key generation {key_generation} is outside 0..{MAX_KEY_GENERATION}")
    return f"{KEY_GEN_SEP}k{key_generation}" if key_generation else ""


def stack_name(tenant_id: str, key_generation: int = 0) -> str:
    return f"{tenant_id}{generation_suffix(key_generation)}"


def stack_tenant(stack: str) -> tuple[str, int] | None:
    """(tenant id, key generation) of a tenant stack; None for a cell's stack or
    a name no tenant stack has. The id is not validated here (``broken_rule``)."""
    if cell_of_stack(stack) is not None:
        return None
    tenant_id, sep, generation = stack.partition(KEY_GEN_SEP)
    if not sep:
        return (tenant_id, 0) if tenant_id else None
    found = _GENERATION.match(generation)
    if not tenant_id or found is None or int(found.group(1)) > MAX_KEY_GENERATION:
        return None
    return tenant_id, int(found.group(1))


def key_generation_problem(tenant_id: str, key_generation: int) -> str | None:
    """Why the tenant cannot get names of ``key_generation`` (its role name would
    pass IAM's 64 characters: ids near the limit), or None."""
    if not 0 <= key_generation <= MAX_KEY_GENERATION:
        return f"key generation {key_generation} is outside 0..{MAX_KEY_GENERATION}"
    role = iam_role_name(tenant_id, key_generation)
    if _IAM_ROLE.match(role) is None:
        return (f"its IAM role of key generation {key_generation} ({role}) would break IAM's naming rule "
                f"(64 characters): the id is too long for a move that needs a new role")
    return None


def shared_bucket_name(account_id: str, region: str) -> str:
    return f"tenantctl-shared-{account_id}-{region}"


# -- cells: the default cell keeps the names the single platform always had ---------
def cell_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a cell, or None."""
    if not _CELL_NAME.match(name or ""):
        return "a cell name is lowercase letters and digits in hyphen-separated words, starting with a letter"
    if len(name) > MAX_CELL_NAME:
        return f"a cell name is at most {MAX_CELL_NAME} characters (it goes into bucket names)"
    return None


def new_cell_name_problem(name: str) -> str | None:
    """Why a cell that does not exist yet cannot be named ``name``, or None (a cell
    of a reserved name added before the rule keeps working: its tenants are there)."""
    if name in RESERVED_CELL_NAMES:
        return (f"{name!r} is reserved (the home cell's stack is `{PLATFORM_STACK}`: `--cell default` names it; "
                f"reserved: {', '.join(sorted(RESERVED_CELL_NAMES))})")
    return cell_name_problem(name)


def cell_stack(cell: str) -> str:
    """The Pulumi stack of a cell: `platform` for the default cell, `cell-<name>` else."""
    return PLATFORM_STACK if cell == DEFAULT_CELL else f"{CELL_STACK_PREFIX}{cell}"


def cell_of_stack(stack: str) -> str | None:
    """The cell a stack is the platform of, None for a tenant stack."""
    if stack == PLATFORM_STACK:
        return DEFAULT_CELL
    if stack.startswith(CELL_STACK_PREFIX) and cell_name_problem(stack.removeprefix(CELL_STACK_PREFIX)) is None:
        return stack.removeprefix(CELL_STACK_PREFIX)
    return None


def cell_database(cell: str) -> str:
    """The cell's shared PostgreSQL database (one database per cell on the sandbox's one server)."""
    return "tenantctl" if cell == DEFAULT_CELL else "tenantctl_cell_" + cell.replace("-", "_")


def cell_rds_identifier(cell: str) -> str:
    return rds_identifier(cell_stack(cell))


def cell_key_alias(cell: str) -> str:
    return kms_alias(cell_stack(cell))


def cell_bucket_name(account_id: str, region: str, cell: str) -> str:
    if cell == DEFAULT_CELL:
        return shared_bucket_name(account_id, region)
    return f"tenantctl-{cell_stack(cell)}-{account_id}-{region}"


def cell_logs_bucket_name(account_id: str, region: str, cell: str) -> str:
    """Where S3 delivers the cell bucket's access logs (tenantctl-logs-<name>-<account>-<region> fits in 63)."""
    if cell == DEFAULT_CELL:
        return access_logs_bucket_name(account_id, region)
    return f"tenantctl-logs-{cell}-{account_id}-{region}"


def cell_gateway_role(cell: str) -> str:
    """The shared-pool login of the cell's PostgreSQL (roles are server-wide: the sandbox has one server)."""
    return GATEWAY_ROLE if cell == DEFAULT_CELL else f"{GATEWAY_ROLE}_{cell.replace('-', '_')}"


def cell_gateway_secret(cell: str) -> str:
    return GATEWAY_SECRET if cell == DEFAULT_CELL else f"tenantctl/{cell_stack(cell)}/gateway"


def cell_waker_role(cell: str) -> str:
    """The role the runtime assumes to wake hibernated tenants in a cell of another account
    (`tenantctl-cell-<name>-waker`: no tenant id starts with `cell-`, and no tenant role ends so)."""
    return f"tenantctl-{cell_stack(cell)}-waker"


def waker_roles(region: str) -> str:
    """Every cell's waker role, in any account of ``region``'s partition: what the runtime role
    may assume besides tenant roles."""
    return arn(region, "iam", "*", f"role/{cell_waker_role('*')}")


def tenant_roles(region: str) -> str:
    """Every tenant's role, in any account of ``region``'s partition."""
    return arn(region, "iam", "*", f"role/{iam_role_name('*')}")


def is_cell_waker_role(name: str) -> bool:
    head, tail = cell_waker_role("*").split("*")
    return name.startswith(head) and name.endswith(tail) and len(name) > len(head) + len(tail)


# Region prefix -> (partition, the domain of its endpoints), as botocore's endpoint data
# has them (longest prefix first: us-isob- before us-iso-). Every other region is aws's.
_PARTITIONS = (("us-isob-", "aws-iso-b", "sc2s.sgov.gov"), ("us-isof-", "aws-iso-f", "csp.hci.ic.gov"),
               ("us-iso-", "aws-iso", "c2s.ic.gov"), ("eu-isoe-", "aws-iso-e", "cloud.adc-e.uk"),
               ("eusc-", "aws-eusc", "amazonaws.eu"), ("us-gov-", "aws-us-gov", "amazonaws.com"),
               ("cn-", "aws-cn", "amazonaws.com.cn"))


# Every partition's endpoint domain: a service's regional principal ends with its partition's.
SERVICE_DOMAINS = tuple(sorted({"amazonaws.com", *(domain for _, _, domain in _PARTITIONS)}))


def _partition(region: str) -> tuple[str, str]:
    return next(((p, d) for prefix, p, d in _PARTITIONS if region.startswith(prefix)), ("aws", "amazonaws.com"))


def partition_of(region: str) -> str:
    """The ARN partition of ``region`` (aws-cn for China, aws-us-gov for GovCloud...)."""
    return _partition(region)[0]


def dns_suffix(region: str) -> str:
    """The domain of ``region``'s service endpoints (amazonaws.com.cn in China)."""
    return _partition(region)[1]


def endpoint_url(service: str, region: str) -> str:
    return f"https://{service}.{region}.{dns_suffix(region)}"


# Service principals are `<service>.amazonaws.com` in every partition, but CloudWatch
# Logs' is regional and, like an endpoint, of its partition's domain
# (logs.cn-north-1.amazonaws.com.cn): aws-cdk's region-info and the AWS provider's
# aws_service_principal both say so. The other services tenantctl names (cloudwatch,
# vpc-flow-logs, monitoring.rds, logging.s3, lambda, ecs-tasks) have no such exception.
_REGIONAL_PRINCIPALS = frozenset({"logs"})


def service_principal(service: str, region: str) -> str:
    """The principal ``service`` acts as in ``region``'s partition (a key policy's Service)."""
    return f"{service}.{region}.{dns_suffix(region)}" if service in _REGIONAL_PRINCIPALS else f"{service}.amazonaws.com"


# The Serverless Application Repository account that publishes Secrets Manager's rotation
# applications in each partition (aws-cdk's SecretRotationApplication); none is known elsewhere.
_ROTATION_PUBLISHERS = {"aws": ("us-east-1", "297356227824"), "aws-cn": ("cn-north-1", "193023089310"),
                        "aws-us-gov": ("us-gov-west-1", "023102451235")}
ROTATION_APPLICATION = "SecretsManagerRDSPostgreSQLRotationSingleUser"


def require_deployable(region: str) -> None:
    """InvalidInput (exit 3, rule ``partition``) for a region of a partition where tenantctl
    knows no rotation application to deploy: refused before anything is written."""
    partition = partition_of(region)
    if partition not in _ROTATION_PUBLISHERS:
        raise InvalidInput(
            f"region {region!r} is in partition {partition}, where tenantctl knows no Serverless Application "
            f"Repository ARN of the credential rotation application ({ROTATION_APPLICATION}); cells can be "
            f"added in {', '.join(_ROTATION_PUBLISHERS)} only", rule="partition")


def rotation_application(region: str) -> str:
    """The ARN of AWS's single-user PostgreSQL rotation application in ``region``'s partition."""
    require_deployable(region)
    home, account = _ROTATION_PUBLISHERS[partition_of(region)]
    return arn(home, "serverlessrepo", account, f"applications/{ROTATION_APPLICATION}")


# Their ARNs name no region (the partition is still their region's).
_GLOBAL_SERVICES = frozenset({"iam", "s3", "sts"})
_ANY_PARTITION = re.compile(r"arn:aws(?:-[a-z]+)*:")


def arn(region: str, service: str, account: str, resource: str, *, any_region: bool = False) -> str:
    """The ARN of ``resource`` of ``service`` in ``region``'s partition (``any_region``: "*" for
    its region, as a policy names it in every region of the partition)."""
    where = "" if service in _GLOBAL_SERVICES else "*" if any_region else region
    return f"arn:{partition_of(region)}:{service}:{where}:{account}:{resource}"


def in_any_partition(value: str, arn_: str) -> bool:
    """``value`` is ``arn_`` in some partition: for matchers that know no region."""
    head, tail = _ANY_PARTITION.match(value), _ANY_PARTITION.match(arn_)
    return bool(head and tail) and value[head.end():] == arn_[tail.end():]


def is_arn_of(value: str, service: str) -> bool:
    """``value`` is an ARN of ``service`` (in any partition)."""
    head = _ANY_PARTITION.match(value)
    return head is not None and value[head.end():].startswith(f"{service}:")


def account_of_arn(arn: str | None) -> str | None:
    """The account id field of an ARN (None when there is none, e.g. S3 bucket ARNs)."""
    parts = (arn or "").split(":")
    return parts[4] if len(parts) > 5 and parts[0] == "arn" and parts[4] else None


def partition_of_arn(arn: str | None) -> str | None:
    """The partition field of an ARN (aws, aws-cn, aws-us-gov; None when it is no ARN)."""
    parts = (arn or "").split(":")
    return parts[1] if len(parts) > 5 and parts[0] == "arn" and parts[1] else None


def region_of_arn(arn: str | None) -> str | None:
    parts = (arn or "").split(":")
    return parts[3] if len(parts) > 5 and parts[0] == "arn" and parts[3] else None


def access_logs_bucket_name(account_id: str, region: str) -> str:
    """Where S3 delivers the shared bucket's server access logs."""
    return f"tenantctl-logs-{account_id}-{region}"


def rotation_function_name(stack: str) -> str:
    """The Lambda function rotating the DB credentials of the stack's network
    (the platform's, for pooled tenants; a dedicated tenant's own)."""
    return resource_name(stack, "rot")


def log_group_prefix(stack: str) -> str:
    """Every CloudWatch Logs group a stack names itself (flow logs) starts here;
    the trailing "/" keeps `acme`'s groups apart from `acme-corp`'s."""
    return f"/tenantctl/{stack}/"


# The group RDS enhanced monitoring writes to: a name RDS fixes, one per account and region.
RDS_OS_METRICS_GROUP = "RDSOSMetrics"


def rds_log_group(identifier: str, log: str) -> str:
    """The group RDS exports an instance's ``log`` (postgresql, upgrade) to."""
    return f"/aws/rds/instance/{identifier}/{log}"


def lambda_log_group(function_name: str) -> str:
    return f"/aws/lambda/{function_name}"


def own_log_groups(stack: str) -> list[str]:
    """The log groups a stack's key encrypts (patterns, "*" a wildcard): its
    flow logs (and anything else under its prefix), its RDS exports, its
    rotation function's logs."""
    return [f"{log_group_prefix(stack)}*", rds_log_group(rds_identifier(stack), "*"),
            lambda_log_group(rotation_function_name(stack))]


def alarm_names(tenant_id: str, dedicated: bool) -> list[str]:
    """The tenant's CloudWatch alarms (infra TenantAlarms): its queues', and its
    own database's for a dedicated tenant."""
    suffixes = ["dlq-depth", "queue-age"] + (["db-storage", "db-cpu"] if dedicated else [])
    return [resource_name(tenant_id, s) for s in suffixes]


def alarm_topic_resource(component: str) -> str:
    """The Pulumi resource name of a TenantAlarms component's topic."""
    return f"{component}-topic"


def alarm_subscription_resource(topic_resource: str, protocol: str, endpoint: str) -> str:
    """The Pulumi resource name of the topic's subscription to ``endpoint``: from what it
    delivers to, so adding or removing one leaves the others be."""
    import hashlib

    digest = hashlib.sha256(f"{protocol}:{endpoint}".encode()).hexdigest()[:10]
    return f"{topic_resource.removesuffix('-topic')}-to-{digest}"


def scratch_database(tenant_id: str, restore_id: str) -> str:
    """A drill's scratch database (<= 63 bytes: 6 + 24 + 1 + 23, the restore id
    without its 'T', 'Z' and '-')."""
    stamp = restore_id.replace("-", "_").replace("T", "").replace("Z", "").lower()
    return f"drill_{tenant_id.replace('-', '_')[:24]}_{stamp}"


def scratch_instance(tenant_id: str, restore_id: str) -> str:
    """A drill's scratch RDS instance, restored from a snapshot."""
    stamp = restore_id.lower().replace("t", "").replace("z", "")[:20]
    return f"drill-{tenant_id}"[:40].rstrip("-") + "-" + stamp


def drill_snapshot(tenant_id: str, backup_id: str) -> str:
    """A drill backup's RDS snapshot of a dedicated tenant."""
    return f"{rds_identifier(tenant_id)}-drill-{backup_id.lower().replace('t', '').replace('z', '')}"[:255]


# -- workspaces: a tenant's departments or projects, each with names of its own ------
# Tenant ids never hold "--" (the rds-identifier rule), so "--" (and "__" in
# PostgreSQL names, "/ws/" in alias and secret paths) separates a tenant from
# its workspace: no tenant id, and no other tenant's workspace, can produce the same name.
WS_SEP = WORKSPACE_SEP
_WS_NAME = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")


def ws_schema_name(tenant_id: str, workspace: str) -> str:
    return f"{schema_name(tenant_id)}__ws_{workspace.replace('-', '_')}"


def ws_db_role_name(tenant_id: str, workspace: str) -> str:
    return ws_schema_name(tenant_id, workspace) + "_app"


def ws_kms_alias(tenant_id: str, workspace: str) -> str:
    return f"{kms_alias(tenant_id)}/ws/{workspace}"


def ws_s3_prefix(tenant_id: str, workspace: str) -> str:
    """`tenants/<id>--<ws>/`: beside the tenant's prefix, never under it."""
    return workspace_prefix(tenant_id, workspace)


def ws_s3_prefix_root(tenant_id: str) -> str:
    """`tenants/<id>--`: what every workspace prefix of the tenant starts with, a
    removed workspace's included (no other tenant's prefix does: ids never hold `--`)."""
    return f"tenants/{tenant_id}{WS_SEP}"


def ws_stem(tenant_id: str, workspace: str) -> str:
    """`<id>--<ws>`: what `tenantctl-<stem>-<suffix>` names (queues, IAM role) carry."""
    return f"{tenant_id}{WS_SEP}{workspace}"


def ws_queue_name(tenant_id: str, workspace: str) -> str:
    return queue_name(ws_stem(tenant_id, workspace))


def ws_dlq_name(tenant_id: str, workspace: str) -> str:
    return dlq_name(ws_stem(tenant_id, workspace))


def ws_iam_role_name(tenant_id: str, workspace: str, key_generation: int = 0) -> str:
    """`tenantctl-<id>--<ws>-app`; of key generation N, `tenantctl-<id>--<ws>.k<N>-app`
    (read back as the workspace's by ``tenant_ids_in``, like the tenant's)."""
    return iam_role_name(ws_stem(tenant_id, workspace), key_generation)


def ws_key_generation_problem(tenant_id: str, workspace: str, key_generation: int) -> str | None:
    """Why workspace ``workspace`` of the tenant cannot get the role of ``key_generation``, or None."""
    role = ws_iam_role_name(tenant_id, workspace, key_generation)
    if _IAM_ROLE.match(role) is None:
        return (f"the IAM role of its workspace {workspace!r} of key generation {key_generation} ({role}) would "
                "break IAM's naming rule (64 characters): the names are too long for a move that needs new roles")
    return None


def ws_secret_name(tenant_id: str, workspace: str) -> str:
    return f"tenantctl/{tenant_id}/ws/{workspace}/db"


# Each kind of name: how a tenant's is formed, and how a workspace's.
_NAME_FORMS: dict[str, tuple[Callable[[str], str], Callable[[str, str], str]]] = {
    "schema": (schema_name, ws_schema_name),
    "db_role": (db_role_name, ws_db_role_name),
    "kms_alias": (kms_alias, ws_kms_alias),
    "s3_prefix": (s3_prefix, ws_s3_prefix),
    "queue": (queue_name, ws_queue_name),
    "dlq": (dlq_name, ws_dlq_name),
    "iam_role": (iam_role_name, ws_iam_role_name),
    "secret": (secret_name, ws_secret_name),
}


@dataclass(frozen=True)
class OwnerNames:
    """Every name of one owner of resources: a tenant (``workspace`` None) or one
    of its workspaces. The components take it, so a tenant and a workspace are
    declared by the same code. ``key``: the RLS row key and session tag value."""

    tenant_id: str
    workspace: str | None = None
    key: str = field(init=False, compare=False)
    schema: str = field(init=False, compare=False)
    db_role: str = field(init=False, compare=False)
    kms_alias: str = field(init=False, compare=False)
    s3_prefix: str = field(init=False, compare=False)
    queue: str = field(init=False, compare=False)
    dlq: str = field(init=False, compare=False)
    iam_role: str = field(init=False, compare=False)
    secret: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        tid, ws = self.tenant_id, self.workspace
        object.__setattr__(self, "key", tid if ws is None else workspace_key(tid, ws))
        for kind, (tenant, of_workspace) in _NAME_FORMS.items():
            object.__setattr__(self, kind, tenant(tid) if ws is None else of_workspace(tid, ws))

    def all(self) -> dict[str, str]:
        return {kind: getattr(self, kind) for kind in _NAME_FORMS}


def _ws_fits(tenant_id: str, workspace: str) -> bool:
    """Every derived name within its service's limit: PostgreSQL 63 bytes, IAM 64, SQS 80."""
    names = OwnerNames(tenant_id, workspace)
    return (len(names.db_role.encode()) <= 63 and _IAM_ROLE.match(names.iam_role) is not None
            and all(_SQS.match(q) for q in (names.queue, names.dlq)))


def workspace_problem(tenant_id: str, workspace: str) -> str | None:
    """Why ``workspace`` cannot name a workspace of ``tenant_id``, or None."""
    if not _WS_NAME.match(workspace or ""):
        return ("a workspace name is lowercase letters and digits in single-hyphen-separated words, "
                "starting with a letter")
    if not _ws_fits(tenant_id, workspace):
        return (f"too long for tenant {tenant_id!r}: its PostgreSQL role, IAM role or queue names would exceed "
                f"their limits (at most {max_workspace_length(tenant_id)} characters here)")
    return None


def max_workspace_length(tenant_id: str) -> int:
    """Longest workspace name every rule accepts for ``tenant_id`` (0: none fits)."""
    n = 0
    while _ws_fits(tenant_id, "a" * (n + 1)):
        n += 1
    return n


def require_valid_workspace(tenant_id: str, workspace: str) -> str:
    """``workspace`` when it can name a workspace of ``tenant_id``, else InvalidInput (exit 3)."""
    problem = workspace_problem(tenant_id, workspace) if isinstance(workspace, str) else "not a string"
    if problem:
        raise InvalidInput(f"workspace {workspace!r}: {problem}", rule="workspace-name")
    return workspace


def _ws_part(text: str, head: str, tail: str) -> bool:
    """``text`` is ``head<workspace>tail`` for a well-formed workspace name."""
    middle = text[len(head):len(text) - len(tail)] if text.startswith(head) and text.endswith(tail) else ""
    return _WS_NAME.match(middle) is not None


def owns_queue(tenant_id: str, name: str) -> bool:
    """``name`` is a queue of the tenant or of one of its workspaces."""
    return name in (queue_name(tenant_id), dlq_name(tenant_id)) or any(
        _ws_part(name, f"tenantctl-{tenant_id}{WS_SEP}", tail) for tail in ("-jobs", "-jobs-dlq"))


def owns_secret(tenant_id: str, name: str) -> bool:
    """``name`` (a secret's name, or an ARN's, with the random suffix AWS adds) is
    the tenant's DB secret or one of its workspaces'."""
    own = re.escape(f"tenantctl/{tenant_id}/")
    ws = _WS_NAME.pattern.strip("^$")
    return re.fullmatch(rf"{own}(?:ws/{ws}/)?db(?:-[A-Za-z0-9]+)?", name.rsplit(":", 1)[-1]) is not None


def owns_key_path(tenant_id: str, key: str) -> bool:
    """``key`` (an object key or pattern) lies under the tenant's prefix or one of its workspaces'."""
    owner, sep, _ = key.partition("/")[2].partition("/") if key.startswith("tenants/") else ("", "", "")
    if not sep:
        return False
    tenant, ws_sep, workspace = owner.partition(WS_SEP)
    return tenant == tenant_id and (not ws_sep or _WS_NAME.match(workspace) is not None)


def owns_alias(tenant_id: str, alias: str) -> bool:
    """``alias`` is the tenant's key alias or one of its workspaces'."""
    return alias == kms_alias(tenant_id) or _ws_part(alias, f"{kms_alias(tenant_id)}/ws/", "")


# -- parsing: which tenants a name belongs to --------------------------------------
_OWNED = (
    re.compile(r"tenants/([a-z][a-z0-9-]*)/"),          # S3 prefix (a workspace's: tenants/<id>--<ws>/)
    re.compile(r"alias/tenantctl/([a-z][a-z0-9-]*)"),   # KMS alias (a workspace's: <tenant's>/ws/<name>)
    re.compile(r"tenantctl/([a-z][a-z0-9-]*)/(?:ws/[a-z0-9-]+/)?db"),  # secret name
)
_TOKEN = re.compile(r"tenantctl-[a-z0-9-]+")
# `tenantctl-<id>.k<N>-<suffix>` (a role of key generation N) is read as `tenantctl-<id>-<suffix>`.
_GENERATION_IN_NAME = re.compile(r"(tenantctl-[a-z0-9-]+)\.k[0-9]+-")
_SCHEMA = re.compile(r"^tenant_[a-z0-9_]+$")


@lru_cache(maxsize=4096)
def tenant_ids_in(text: str, tenant_id: str) -> frozenset[str]:
    """Ids of tenants other than ``tenant_id`` whose names appear in ``text``
    (a `tenantctl-<x>-<suffix>` token belongs to ``tenant_id`` when x is its id).
    Memoized: the policy gate judges a stack's plan again as each of its
    resources is registered, reading the same strings each time."""
    # An S3 prefix `tenants/<id>--<ws>/` is a workspace's: its tenant's.
    found = {m.group(1).partition(WS_SEP)[0] for p in _OWNED for m in p.finditer(text)}
    for token in _TOKEN.findall(_GENERATION_IN_NAME.sub(r"\1-", text)):
        body = token.removeprefix("tenantctl-")
        owner, sep, rest = body.partition(WS_SEP)
        if sep:  # a workspace's `tenantctl-<id>--<ws>-<suffix>`: its tenant's
            if owner != tenant_id and any(rest.endswith(f"-{s}") for s in NAME_SUFFIXES):
                found.add(owner)
            continue
        owned = body.removeprefix(f"{tenant_id}-") in NAME_SUFFIXES and body.startswith(f"{tenant_id}-")
        if body == tenant_id or owned:
            continue
        for suffix in NAME_SUFFIXES:
            if body.endswith(f"-{suffix}"):
                found.add(body.removesuffix(f"-{suffix}"))
    if _SCHEMA.match(text) and text != "tenant_id":
        owner, ws, _ = text.partition("__ws_")  # a workspace's schema or role: its tenant's
        if ws and owner != schema_name(tenant_id):
            found.add(owner.removeprefix("tenant_").replace("_", "-"))
        elif not ws and text not in (schema_name(tenant_id), db_role_name(tenant_id)):
            found.add(text.removeprefix("tenant_").removesuffix("_app").replace("_", "-"))
    found.discard(tenant_id)
    # Cells' stacks (`platform`, `cell-<name>`) name shared resources, never a
    # tenant's: those ids are reserved, so no tenant hides behind them.
    return frozenset(f for f in found if cell_of_stack(f) is None)


@dataclass(frozen=True)
class NamingRule:
    name: str
    explain: str
    ok: Callable[[str], bool]


_RDS = re.compile(r"^[a-z](?:[a-z0-9]|-(?!-))*(?<!-)$")
_SQS = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
_KMS_ALIAS = re.compile(r"^alias/[A-Za-z0-9/_-]{1,250}$")
_IAM_ROLE = re.compile(r"^[\w+=,.@-]{1,64}$")
_LAMBDA = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_STACK = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
_S3_KEY_SAFE = re.compile(r"^[a-z0-9/-]+$")

RULES: tuple[NamingRule, ...] = (
    NamingRule("charset", "lowercase letters, digits and single hyphens, starting with a letter",
               lambda i: re.fullmatch(r"[a-z][a-z0-9-]*", i) is not None),
    NamingRule("reserved", f"not a reserved id ({', '.join(sorted(RESERVED_IDS))}) "
               f"nor starting with {', '.join(RESERVED_PREFIXES)}",
               lambda i: i not in RESERVED_IDS and not i.startswith(RESERVED_PREFIXES)),
    NamingRule("rds-identifier", "RDS identifier: letter first, no double or trailing hyphen, <= 63 chars",
               lambda i: _RDS.match(rds_identifier(i)) is not None and len(rds_identifier(i)) <= 63),
    NamingRule("postgres-identifier", "PostgreSQL identifiers (schema, role) <= 63 bytes",
               lambda i: len(db_role_name(i).encode()) <= 63),
    NamingRule("sqs-queue-name", "SQS queue names incl. the '-jobs-dlq' suffix <= 80 chars",
               lambda i: all(_SQS.match(q) for q in (queue_name(i), dlq_name(i)))),
    NamingRule("iam-role-name", "IAM role name incl. the 'tenantctl-'/'-app' affixes <= 64 chars",
               lambda i: _IAM_ROLE.match(iam_role_name(i)) is not None),
    NamingRule("lambda-function-name", "Lambda function name incl. the 'tenantctl-'/'-rot' affixes <= 64 chars",
               lambda i: _LAMBDA.match(rotation_function_name(i)) is not None),
    NamingRule("kms-alias", "KMS alias characters and length",
               lambda i: _KMS_ALIAS.match(kms_alias(i)) is not None),
    NamingRule("s3-prefix", "S3 prefix of safe key characters",
               lambda i: _S3_KEY_SAFE.match(s3_prefix(i)) is not None),
    NamingRule("pulumi-stack-name", "Pulumi stack name characters, <= 100",
               lambda i: _STACK.match(stack_name(i)) is not None),
)


def broken_rule(tenant_id: str) -> NamingRule | None:
    """The first naming rule the id breaks, or None when it is valid everywhere."""
    if not tenant_id:
        return RULES[0]
    for rule in RULES:
        if not rule.ok(tenant_id):
            return rule
    return None


def require_valid(tenant_id: str, hint: str = "") -> str:
    """``tenant_id`` when every naming rule accepts it, else InvalidInput
    (exit 3) naming the broken rule. Every operation calls it before its first
    write or call, so an id that skipped TenantSpec's validation
    (``model_construct``, a hand-built record) never reaches the registry,
    stacks/ or a cloud API; ``hint`` is appended to the refusal."""
    rule = broken_rule(tenant_id) if isinstance(tenant_id, str) else RULES[0]
    if rule is not None:
        raise InvalidInput(f"tenant id {tenant_id!r} breaks the {rule.name} rule: {rule.explain}{hint}",
                           rule=rule.name)
    return tenant_id


def forget_hint(tenant_id: str) -> str:
    """What a refusal of an existing tenant's invalid id adds: how to remove what it left."""
    import shlex

    if not tenant_id:
        return ""
    return (f"; a registry record or stack file left under this id is removed by "
            f"`tenantctl forget {shlex.quote(tenant_id)} --yes`")


def max_id_length() -> int:
    """Longest id every rule accepts (for docs and error messages)."""
    n = 1
    while broken_rule("a" * (n + 1)) is None:
        n += 1
    return n
