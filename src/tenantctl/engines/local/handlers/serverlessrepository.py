"""Serverless Application Repository stacks, stood in for on the sandbox.

tenantctl deploys one application: AWS's single-user rotation function for
RDS PostgreSQL (infra.components.credential_rotation). moto has no Serverless
Application Repository and runs no Lambda code without Docker, so the stack
becomes what it creates that others refer to: a Lambda function of the
requested name (a stub body, the requested VPC configuration) and its
execution role, trusted by Lambda only, each tagged as CloudFormation tags
what a stack creates (the stack's tags, its ARN, name and the template's
logical id: what tells them from leftovers). The function's work, when a
rotation is run on the sandbox, is done by ``tenantctl.sandbox.rotation``
(the same four Secrets Manager steps against the sandbox PostgreSQL).
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

from tenantctl.engines.local.handlers.base import Context, Desired, Handler, exists, ignore_missing
from tenantctl.naming import service_principal

RUNTIME = "python3.12"
STUB = ("def lambda_handler(event, context):\n"
        "    raise NotImplementedError('sandbox stand-in: see tenantctl.sandbox.rotation')\n")
# The application template's logical ids (a SAM function and the role SAM makes for it).
FUNCTION_LOGICAL_ID = "SecretsManagerRDSPostgreSQLRotationSingleUser"
ROLE_LOGICAL_ID = f"{FUNCTION_LOGICAL_ID}Role"


def _lambda_trust(region: str) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": service_principal("lambda", region)}, "Action": "sts:AssumeRole"}]})


def _stub_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("lambda_function.py", STUB)
    return buf.getvalue()


class CloudFormationStackHandler(Handler):
    type = "aws:serverlessrepository/cloudFormationStack:CloudFormationStack"
    replace_on = ("name", "applicationId")

    @staticmethod
    def _function(d: Desired) -> str:
        return str((d.get("parameters") or {}).get("functionName") or d.physical_name())

    @staticmethod
    def _stack_name(d: Desired) -> str:
        return f"serverlessrepo-{d.physical_name()}"

    def _stack_id(self, ctx: Context, d: Desired) -> str:
        return ctx.arn("cloudformation", f"stack/{self._stack_name(d)}/sandbox")

    def _tags(self, ctx: Context, d: Desired, logical_id: str) -> dict[str, str]:
        return {**d.tags(), "aws:cloudformation:stack-id": self._stack_id(ctx, d),
                "aws:cloudformation:stack-name": self._stack_name(d), "aws:cloudformation:logical-id": logical_id}

    def find(self, ctx: Context, d: Desired) -> str | None:
        found = exists(lambda: ctx.client("lambda").get_function(FunctionName=self._function(d)))
        return self._stack_id(ctx, d) if found else None

    def make(self, ctx: Context, d: Desired) -> str:
        iam, name = ctx.client("iam"), self._function(d)
        role = f"{name}-role"
        try:
            arn = iam.create_role(
                RoleName=role, AssumeRolePolicyDocument=_lambda_trust(ctx.region),
                Tags=[{"Key": k, "Value": v} for k, v in self._tags(ctx, d, ROLE_LOGICAL_ID).items()],
                Description="execution role of the sandbox's stand-in rotation function")["Role"]["Arn"]
        except iam.exceptions.EntityAlreadyExistsException:  # a crashed create made it
            arn = iam.get_role(RoleName=role)["Role"]["Arn"]
        params = d.get("parameters") or {}
        vpc = {"SubnetIds": [s for s in str(params.get("vpcSubnetIds", "")).split(",") if s],
               "SecurityGroupIds": [g for g in str(params.get("vpcSecurityGroupIds", "")).split(",") if g]}
        ctx.client("lambda").create_function(
            FunctionName=name, Runtime=RUNTIME, Role=arn, Handler="lambda_function.lambda_handler",
            Code={"ZipFile": _stub_zip()}, Timeout=30, VpcConfig=vpc, Tags=self._tags(ctx, d, FUNCTION_LOGICAL_ID),
            Environment={"Variables": {"SECRETS_MANAGER_ENDPOINT": str(params.get("endpoint", ""))}})
        return self._stack_id(ctx, d)

    def configure(self, ctx: Context, rid: str, d: Desired, olds: dict[str, Any] | None) -> dict[str, Any]:
        fn = ctx.client("lambda").get_function(FunctionName=self._function(d))["Configuration"]
        return {"outputs": {"RotationLambdaARN": fn["FunctionArn"]}, "semanticVersion": "sandbox",
                "tagsAll": d.tags()}

    def remove(self, ctx: Context, rid: str, d: Desired) -> None:
        name = self._function(d)
        ignore_missing(lambda: ctx.client("lambda").delete_function(FunctionName=name))
        ignore_missing(lambda: ctx.client("iam").delete_role(RoleName=f"{name}-role"))


HANDLERS = (CloudFormationStackHandler(),)
