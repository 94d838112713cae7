"""Secrets Manager secrets, found by name (a secret pending deletion is
restored, not duplicated), and their rotation schedules.

A schedule is recorded in moto as RotateSecret records it (function,
period, rotation enabled), with ``RotateImmediately`` off: moto cannot run the
function (no Docker), and its stand-in would promote an empty version. The
rotation itself runs on the sandbox through ``tenantctl.sandbox.rotation``,
the same four steps the function runs on AWS."""

from __future__ import annotations

import uuid
from typing import Any

from tenantctl.engines.local.handlers.base import (
    Context,
    Desired,
    Handler,
    as_int,
    error_code,
    ignore_missing,
    managed_tags,
    read_or_none,
)


def find_secret(ctx: Context, name: str) -> str | None:
    sm = ctx.client("secretsmanager")
    described = read_or_none(lambda: sm.describe_secret(SecretId=name))
    if described is None:
        return None
    if described.get("DeletedDate"):
        sm.restore_secret(SecretId=name)
    return described["ARN"]


def delete_secret(ctx: Context, secret_id: str, recovery_days: int) -> None:
    args: dict[str, Any] = {"SecretId": secret_id}
    if recovery_days:
        args["RecoveryWindowInDays"] = recovery_days
    else:
        args["ForceDeleteWithoutRecovery"] = True
    ignore_missing(lambda: ctx.client("secretsmanager").delete_secret(**args), "ResourceNotFoundException",
                   "InvalidRequestException")  # already scheduled for deletion


class SecretHandler(Handler):
    type = "aws:secretsmanager/secret:Secret"
    replace_on = ("name", "namePrefix")
    read_defaults = {"description": ""}
    # Taken by a live secret, or by one scheduled for deletion (find restores that one).
    taken_codes = ("ResourceExistsException", "InvalidRequestException")

    def find(self, ctx: Context, d: Desired) -> str | None:
        return find_secret(ctx, d.physical_name())

    def read(self, ctx: Context, rid: str | None, d: Desired) -> dict[str, Any] | None:
        got = read_or_none(lambda: ctx.client("secretsmanager").describe_secret(SecretId=rid or d.physical_name()))
        if got is None or got.get("DeletedDate"):  # scheduled for deletion: gone (a create restores it)
            return None
        return {"description": got.get("Description", ""), "kmsKeyId": got.get("KmsKeyId"),
                "tags": managed_tags(d, {t["Key"]: t["Value"] for t in got.get("Tags", [])})}

    def make(self, ctx: Context, d: Desired) -> str:
        args: dict[str, Any] = {"Name": d.physical_name(), "Description": d.get("description", ""),
                                "Tags": d.tag_list()}
        if d.get("kmsKeyId"):
            args["KmsKeyId"] = d.get("kmsKeyId")
        return ctx.client("secretsmanager").create_secret(**args)["ARN"]

    def configure(self, ctx: Context, rid: str, d: Desired, olds: dict[str, Any] | None) -> dict[str, Any]:
        sm = ctx.client("secretsmanager")
        if olds is not None:
            args: dict[str, Any] = {"SecretId": rid, "Description": d.get("description", "")}
            if d.get("kmsKeyId"):
                args["KmsKeyId"] = d.get("kmsKeyId")
            sm.update_secret(**args)
            if d.tags():
                sm.tag_resource(SecretId=rid, Tags=d.tag_list())
        return {"arn": rid, "name": d.physical_name(), "tagsAll": d.tags()}

    def remove(self, ctx: Context, rid: str, d: Desired) -> None:
        delete_secret(ctx, rid, as_int(d.get("recoveryWindowInDays", 30)))


PENDING = "AWSPENDING"


class SecretRotationHandler(Handler):
    """Id: the secret's ARN, as Pulumi's."""

    type = "aws:secretsmanager/secretRotation:SecretRotation"
    replace_on = ("secretId",)
    find_when_recovering = True  # configure sets the rotation whether or not one is on

    def _described(self, ctx: Context, rid: str | None, d: Desired) -> dict[str, Any] | None:
        """The secret while its rotation is on; None once it is gone with its secret, or turned off."""
        got = read_or_none(lambda: ctx.client("secretsmanager").describe_secret(SecretId=rid or d.get("secretId")))
        return None if got is None or got.get("DeletedDate") or not got.get("RotationEnabled") else got

    def find(self, ctx: Context, d: Desired) -> str | None:
        got = self._described(ctx, None, d)
        return got["ARN"] if got else None

    def read(self, ctx: Context, rid: str | None, d: Desired) -> dict[str, Any] | None:
        got = self._described(ctx, rid, d)
        return None if got is None else {"rotationLambdaArn": got.get("RotationLambdaARN")}

    def make(self, ctx: Context, d: Desired) -> str:
        secret = str(d.get("secretId"))
        if secret.startswith("arn:"):  # the id is the secret's ARN already: nothing to look up
            return secret
        return ctx.client("secretsmanager").describe_secret(SecretId=secret)["ARN"]

    def configure(self, ctx: Context, rid: str, d: Desired, olds: dict[str, Any] | None) -> dict[str, Any]:
        sm = ctx.client("secretsmanager")
        rules: dict[str, Any] = {}
        days = (d.get("rotationRules") or {}).get("automaticallyAfterDays")
        if days:
            rules["AutomaticallyAfterDays"] = as_int(days)
        if (d.get("rotationRules") or {}).get("scheduleExpression"):
            rules["ScheduleExpression"] = d.get("rotationRules")["scheduleExpression"]
        token = str(uuid.uuid4())  # the id of the version RotateSecret adds: known, not looked up
        sm.rotate_secret(SecretId=rid, RotationLambdaARN=d.get("rotationLambdaArn"), RotationRules=rules,
                         RotateImmediately=False, ClientRequestToken=token)
        # moto's RotateSecret leaves AWSPENDING on a copy of the current value
        # (AWS runs the function's testSecret step instead): take it off, so a
        # pending version means a rotation in progress, as on AWS. (Older
        # versions lost the label to this one.) Refused when the version did not
        # get the label (none added, or made current at once): nothing to take off.
        from botocore.exceptions import ClientError

        try:
            sm.update_secret_version_stage(SecretId=rid, VersionStage=PENDING, RemoveFromVersionId=token)
        except ClientError as exc:
            if error_code(exc) != "InvalidParameterException":
                raise
        return {"rotationEnabled": True}

    def remove(self, ctx: Context, rid: str, d: Desired) -> None:
        ignore_missing(lambda: ctx.client("secretsmanager").cancel_rotate_secret(SecretId=rid),
                       "ResourceNotFoundException", "InvalidRequestException")


HANDLERS = (SecretHandler(), SecretRotationHandler())
