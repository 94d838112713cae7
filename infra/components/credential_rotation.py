"""CredentialRotation: the function that rotates the tenants' PostgreSQL
passwords in one network (the platform's, for every pooled tenant; a
dedicated tenant's own), and the schedule that has Secrets Manager run it on
one tenant's secret (``SecretRotationSchedule``).

The function is AWS's published single-user rotation for RDS PostgreSQL
(Serverless Application Repository: its partition's own publisher,
``naming.rotation_application``), maintained and patched by AWS: each
rotation logs in as the tenant role and sets a new password on itself, so no
admin credential is involved and the tenant role needs no extra privilege. It
runs in the network's private subnets, in a group that reaches only
PostgreSQL and the VPC endpoints; the database's group admits it by a rule of
its own. Secrets Manager's four steps leave a few seconds where the database
has the AWSPENDING password and AWSCURRENT still holds the old one:
tenant_runtime's store retries a failed login with AWSCURRENT re-read, then
AWSPENDING, so a rotation costs no request. A suspended tenant's roles are
NOLOGIN: a rotation due meanwhile stops at setSecret, pending, and `tenantctl
resume` finishes it (tenantctl.operations.deferred_rotation).

Why not RDS IAM authentication for the runtime: the database role would need
``rds_iam`` (a membership the posture check refuses), RDS throttles IAM
logins per instance (one shared instance serves every pooled tenant's pools),
and the sandbox's PostgreSQL cannot verify IAM tokens, so the path would go
untested. IAM authentication is switched on for the instances all the same
(operators' access).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.components.platform_monitoring import log_group
from infra.components.postgres_instance import client_security_group
from tenantctl import naming

ROTATION_DAYS = 30
# Secrets Manager decrypts and encrypts the secret with the caller's KMS rights,
# bound to the secret by this encryption context key.
SECRET_CONTEXT_KEY = "SecretARN"


@dataclass
class CredentialRotationArgs:
    function_name: str  # naming.rotation_function_name(stack)
    region: str
    vpc_id: pulumi.Input[str]
    vpc_cidr: pulumi.Input[str]
    subnet_ids: pulumi.Input[Sequence[str]]
    kms_key_arn: pulumi.Input[str]  # the function's log group
    tags: dict[str, str]


class CredentialRotation(pulumi.ComponentResource):
    function_arn: pulumi.Output[str]
    role_arn: pulumi.Output[str]
    security_group_id: pulumi.Output[str]

    def __init__(self, name: str, args: CredentialRotationArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("tenantctl:secretsmanager:CredentialRotation", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        sg = client_security_group(f"{name}-sg", args.vpc_id, args.vpc_cidr, {"cidr_blocks": [args.vpc_cidr]},
                                   "rotation function: PostgreSQL and AWS endpoints only", args.tags, child)
        logs = log_group(f"{name}-logs", naming.lambda_log_group(args.function_name), args.kms_key_arn, args.tags,
                         child)
        # The version is the application's latest at the first deploy, then kept in
        # the stack's state: a newer one is taken by an explicit update.
        app = aws.serverlessrepository.CloudFormationStack(
            f"{name}-app", name=args.function_name, application_id=naming.rotation_application(args.region),
            capabilities=["CAPABILITY_IAM", "CAPABILITY_RESOURCE_POLICY"],
            parameters={"endpoint": naming.endpoint_url("secretsmanager", args.region),
                        "functionName": args.function_name,
                        "vpcSubnetIds": pulumi.Output.from_input(args.subnet_ids).apply(",".join),
                        "vpcSecurityGroupIds": sg.id},
            tags=args.tags, opts=pulumi.ResourceOptions(parent=self, depends_on=[logs]))
        self.function_arn = app.outputs.apply(lambda o: o["RotationLambdaARN"])
        self.role_arn = aws.lambda_.get_function_output(function_name=self.function_arn,
                                                        opts=pulumi.InvokeOptions(parent=self)).role
        self.security_group_id = sg.id
        self.register_outputs({"function_arn": self.function_arn, "role_arn": self.role_arn,
                               "security_group_id": self.security_group_id})


@dataclass
class SecretRotationScheduleArgs:
    secret_arn: pulumi.Input[str]
    kms_key_arn: pulumi.Input[str]  # the secret's key
    function_arn: pulumi.Input[str]
    function_role_arn: pulumi.Input[str]
    after: Sequence[pulumi.Resource] = ()  # what writes the secret's first value


class SecretRotationSchedule(pulumi.ComponentResource):
    """One secret rotated every ``ROTATION_DAYS`` by the network's function: a KMS
    grant lets the function's role use the secret's key for that secret only
    (a grant, not a key-policy statement: the key exists before the function's
    role is known), then Secrets Manager's schedule. The first rotation comes
    after the period, not at once: the secret's value is written by the schema
    provider, which must run first (``after``)."""

    def __init__(self, name: str, args: SecretRotationScheduleArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("tenantctl:secretsmanager:SecretRotationSchedule", name, None, opts)
        grant = aws.kms.Grant(
            f"{name}-rotation-grant", key_id=args.kms_key_arn, grantee_principal=args.function_role_arn,
            operations=["Decrypt", "GenerateDataKey"],
            constraints=[{"encryption_context_subset": {SECRET_CONTEXT_KEY: args.secret_arn}}],
            opts=pulumi.ResourceOptions(parent=self))
        rotation = aws.secretsmanager.SecretRotation(
            f"{name}-rotation", secret_id=args.secret_arn, rotation_lambda_arn=args.function_arn,
            rotation_rules={"automatically_after_days": ROTATION_DAYS}, rotate_immediately=False,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[grant, *args.after]))
        self.register_outputs({"rotation_id": rotation.id})
