"""CloudWatch Logs groups, found by name: KMS key, retention and tags are
brought to the declared values on every create and update, and read back
(key and retention) by a refresh."""

from __future__ import annotations

from typing import Any

from tenantctl.engines.local.handlers.base import Context, Desired, Handler, as_int, ignore_missing


class LogGroupHandler(Handler):
    type = "aws:cloudwatch/logGroup:LogGroup"
    replace_on = ("name", "namePrefix", "logGroupClass")

    def find(self, ctx: Context, d: Desired) -> str | None:
        name = d.physical_name()
        groups = ctx.client("logs").describe_log_groups(logGroupNamePrefix=name)["logGroups"]
        return name if any(g["logGroupName"] == name for g in groups) else None

    def read(self, ctx: Context, rid: str | None, d: Desired) -> dict[str, Any] | None:
        name = rid or d.physical_name()
        groups = ctx.client("logs").describe_log_groups(logGroupNamePrefix=name)["logGroups"]
        group = next((g for g in groups if g["logGroupName"] == name), None)
        if group is None:
            return None
        return {"retentionInDays": group.get("retentionInDays"), "kmsKeyId": group.get("kmsKeyId")}

    def make(self, ctx: Context, d: Desired) -> str:
        args: dict[str, Any] = {"logGroupName": d.physical_name(), "tags": d.tags()}
        if d.get("kmsKeyId"):
            args["kmsKeyId"] = d.get("kmsKeyId")
        ctx.client("logs").create_log_group(**args)
        return d.physical_name()

    def configure(self, ctx: Context, rid: str, d: Desired, olds: dict[str, Any] | None) -> dict[str, Any]:
        logs = ctx.client("logs")
        if d.get("retentionInDays"):
            logs.put_retention_policy(logGroupName=rid, retentionInDays=as_int(d.get("retentionInDays")))
        elif olds and olds.get("retentionInDays"):
            logs.delete_retention_policy(logGroupName=rid)
        if olds is not None:
            # Only a changed key is (dis)associated: an update that keeps it (a tag change) makes no key call.
            if d.get("kmsKeyId") and d.get("kmsKeyId") != olds.get("kmsKeyId"):
                logs.associate_kms_key(logGroupName=rid, kmsKeyId=d.get("kmsKeyId"))
            elif not d.get("kmsKeyId") and olds.get("kmsKeyId"):
                logs.disassociate_kms_key(logGroupName=rid)
            if d.tags():
                logs.tag_log_group(logGroupName=rid, tags=d.tags())
        return {"arn": ctx.arn("logs", f"log-group:{rid}"), "name": rid,
                "tagsAll": d.tags()}

    def remove(self, ctx: Context, rid: str, d: Desired) -> None:
        ignore_missing(lambda: ctx.client("logs").delete_log_group(logGroupName=rid), "ResourceNotFoundException")


HANDLERS = (LogGroupHandler(),)
