"""TenantWorkspace: one workspace of a tenant (a department or project), kept
apart from the tenant's other workspaces as tenants are kept apart.

It reuses the tenant's components under the workspace's own names
(naming.OwnerNames): its own KMS key (its role the only user), IAM role (a
session tagged with the workspace key ``<id>/<ws>``, reaching only its prefix
``tenants/<id>--<ws>/`` (beside the tenant's, which the tenant role's
``tenants/<id>/*`` does not cover), its key, its two queues and its secret), delay
queue + DLQ under its key (its own, not an attribute on the tenant's queue: a
message is then readable only with the workspace's role and key), secret, and
a schema of its own with FORCE RLS keyed on ``<id>/<ws>`` and its own role in
the tenant's store (the shared PostgreSQL for pooled tenants, the tenant's own
for dedicated ones), its password rotated by the tenant's rotation function;
and the tenant's alarms on its own queues (DLQ depth, oldest message age).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi

from infra.components.credential_rotation import SecretRotationSchedule, SecretRotationScheduleArgs
from infra.components.kms_key import TenantKey, TenantKeyArgs, alarms_statement
from infra.components.tenant_alarms import TenantAlarms, TenantAlarmsArgs
from infra.components.tenant_database import TenantDatabase
from infra.components.tenant_queue import TenantQueue, TenantQueueArgs
from infra.components.tenant_role import (
    TenantGrants,
    TenantRole,
    TenantRoleAccess,
    TenantRoleAccessArgs,
    TenantRoleArgs,
)
from infra.components.tenant_secret import TenantSecret, TenantSecretArgs
from infra.providers.tenant_schema import TenantSchema, TenantSchemaArgs
from tenantctl import naming
from tenantctl.models import TenantSpec, WorkspaceSpec


@dataclass
class TenantWorkspaceArgs:
    spec: TenantSpec
    workspace: WorkspaceSpec
    database: TenantDatabase  # the tenant's current store: the workspace's schema goes beside the tenant's
    runtime_principal_arn: pulumi.Input[str]
    admin_arn: pulumi.Input[str]
    account_id: pulumi.Input[str]
    bucket_arn: pulumi.Input[str]
    account_role_arn: str | None = None
    # A move is open: the store it retires (the workspace's schema stays there
    # too, unchanged, until the move is finalized or rolled back) and the
    # generations of both stores, which name the two schemas apart.
    retiring: TenantDatabase | None = None
    generation: int = 0
    retiring_generation: int = 0
    # A move between cells: the old cell's bucket, where the workspace's prefix
    # stays readable by its role until the move ends (as the tenant's).
    moving_bucket_arn: pulumi.Input[str] | None = None
    # The tenant's stack of key generation N (a move to another account or region): the role's name.
    key_generation: int = 0
    alarm_subscriptions: list[dict[str, str]] = field(default_factory=list)  # its cell's, as the tenant's topic


def component_name(tenant_id: str, workspace: str) -> str:
    return naming.ws_stem(tenant_id, workspace)


def schema_component_name(name: str, generation: int, plain: int) -> str:
    """The workspace's TenantSchema in the tenant's store ``generation``: the
    plain name in generation ``plain`` (WorkspaceSpec.schema_generation), the
    generation's own elsewhere."""
    return f"{name}-schema" if generation == plain else f"{name}-schema-s{generation}"


class TenantWorkspace(pulumi.ComponentResource):
    outputs: pulumi.Output[dict]

    def __init__(self, name: str, args: TenantWorkspaceArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("tenantctl:workspace:TenantWorkspace", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        spec, ws, db = args.spec, args.workspace.name, args.database
        tid, names = spec.id, naming.OwnerNames(spec.id, args.workspace.name)
        tags = {**spec.tags(), "workspace": ws, **({"owner": args.workspace.owner} if args.workspace.owner else {})}
        role = TenantRole(name, TenantRoleArgs(tenant_id=tid, workspace=ws, tags=tags, suspended=spec.suspended,
                                               runtime_principal_arn=args.runtime_principal_arn,
                                               key_generation=args.key_generation), opts=child)
        stem = naming.ws_stem(tid, ws)  # `tenantctl-<stem>-<suffix>` names: its queues', role's and alarms'
        key = TenantKey(name, TenantKeyArgs(
            alias=names.kms_alias, admin_arn=args.admin_arn, user_arns=[role.arn], tags=tags,
            description=f"tenantctl tenant {tid} workspace {ws}",
            service_statements=[alarms_statement(spec.region, args.account_id, naming.alarm_names(stem, False))]),
            opts=child)
        secret = TenantSecret(name, TenantSecretArgs(tenant_id=tid, workspace=ws, kms_key_arn=key.arn, tags=tags),
                              opts=child)
        queue = TenantQueue(name, TenantQueueArgs(tenant_id=tid, workspace=ws, kms_key_arn=key.arn,
                                                  spec=args.workspace.queue, tags=tags), opts=child)
        moving = args.retiring is not None
        plain = args.workspace.schema_generation
        if plain is None:
            plain = args.retiring_generation if moving else args.generation

        def schema_in(store: TenantDatabase, generation: int) -> TenantSchema:
            # Named by the store's generation: a move's new schema is another
            # resource, so nothing of the old one is replaced.
            return TenantSchema(schema_component_name(name, generation, plain), TenantSchemaArgs(
                tenant_id=names.key, region=spec.region, host=store.endpoint, port=store.port,
                database=store.database, schema=names.schema, role=names.db_role,
                admin_secret_arn=store.admin_secret_arn, tenant_secret_arn=secret.arn,
                gateway_role=store.gateway_role, account_role_arn=args.account_role_arn,
                owns_secret=not moving, connection_limit=store.connection_limit, login=store.login), opts=child)

        schema = schema_in(db, args.generation)
        if args.retiring is not None:
            schema_in(args.retiring, args.retiring_generation)
        SecretRotationSchedule(name, SecretRotationScheduleArgs(
            secret_arn=secret.arn, kms_key_arn=key.arn, function_arn=db.rotation_function_arn,
            function_role_arn=db.rotation_role_arn, after=[schema]), opts=child)
        TenantAlarms(name, TenantAlarmsArgs(
            tenant_id=stem, kms_key_arn=key.arn, queue_name=queue.queue_name, dlq_name=queue.dlq_name,
            delay_seconds=args.workspace.queue.delay_seconds, tags=tags, subscriptions=args.alarm_subscriptions),
            opts=child)
        TenantRoleAccess(name, TenantRoleAccessArgs(tenant_id=tid, workspace=ws, role=role, grants=TenantGrants(
            bucket_arn=args.bucket_arn, queue_arns=[queue.arn, queue.dlq_arn], kms_key_arn=key.arn,
            secret_arn=secret.arn, moving_bucket_arn=args.moving_bucket_arn, queue_sends=not spec.retired)),
            opts=child)
        # Exactly tenant_runtime.models.WorkspaceResources.
        self.outputs = pulumi.Output.all(
            endpoint=db.endpoint, port=db.port, database=db.database, secret_arn=secret.arn, key_arn=key.arn,
            queue_url=queue.url, dlq_url=queue.dlq_url, role_arn=role.arn,
        ).apply(lambda v: {
            "name": ws,
            "store": {"engine": "postgres", "endpoint": v["endpoint"], "port": int(v["port"]),
                      "database": v["database"], "schema_name": names.schema, "role": names.db_role,
                      "secret_arn": v["secret_arn"]},
            "kms_key_arn": v["key_arn"], "kms_alias": names.kms_alias, "prefix": names.s3_prefix,
            "queue_url": v["queue_url"], "dlq_url": v["dlq_url"], "role_arn": v["role_arn"],
        })
        self.register_outputs({"workspace": self.outputs})
