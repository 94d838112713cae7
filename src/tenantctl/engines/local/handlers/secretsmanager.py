"""Secrets Manager secrets, found by name (a secret pending deletion is restored, not duplicated)."""

from __future__ import annotations

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
    from botocore.exceptions import ClientError

    sm = ctx.client("secretsmanager")
    try:
        described = sm.describe_secret(SecretId=name)
    except ClientError as exc:
        if error_code(exc) == "ResourceNotFoundException":
            return None
        raise
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


HANDLERS = (SecretHandler(),)
