"""DynamoDB tables, found by name."""

from __future__ import annotations

from typing import Any

from tenantctl.engines.local.handlers.base import (
    Context,
    Desired,
    Handler,
    exists,
    ignore_missing,
    managed_tags,
    read_or_none,
)


class TableHandler(Handler):
    type = "aws:dynamodb/table:Table"
    replace_on = ("name", "hashKey", "rangeKey")
    read_defaults = {"deletionProtectionEnabled": False, "pointInTimeRecovery": {"enabled": False}}

    def read(self, ctx: Context, rid: str | None, d: Desired) -> dict[str, Any] | None:
        ddb, name = ctx.client("dynamodb"), rid or d.physical_name()
        got = read_or_none(lambda: ddb.describe_table(TableName=name))
        if got is None:
            return None
        table = got["Table"]
        backups = ddb.describe_continuous_backups(TableName=name)["ContinuousBackupsDescription"]
        pitr = backups.get("PointInTimeRecoveryDescription", {}).get("PointInTimeRecoveryStatus") == "ENABLED"
        tags = ddb.list_tags_of_resource(ResourceArn=table["TableArn"]).get("Tags", [])
        return {"deletionProtectionEnabled": table.get("DeletionProtectionEnabled", False),
                "pointInTimeRecovery": {"enabled": pitr},
                "tags": managed_tags(d, {t["Key"]: t["Value"] for t in tags})}

    def find(self, ctx: Context, d: Desired) -> str | None:
        name = d.physical_name()
        return name if exists(lambda: ctx.client("dynamodb").describe_table(TableName=name)) else None

    def make(self, ctx: Context, d: Desired) -> str:
        keys = [{"AttributeName": d.get("hashKey"), "KeyType": "HASH"}]
        if d.get("rangeKey"):
            keys.append({"AttributeName": d.get("rangeKey"), "KeyType": "RANGE"})
        args: dict[str, Any] = {
            "TableName": d.physical_name(), "KeySchema": keys,
            "AttributeDefinitions": [{"AttributeName": a["name"], "AttributeType": a["type"]}
                                     for a in d.get("attributes", [])],
            "BillingMode": d.get("billingMode", "PROVISIONED"), "Tags": d.tag_list(),
            "DeletionProtectionEnabled": bool(d.get("deletionProtectionEnabled", False)),
        }
        if args["BillingMode"] == "PROVISIONED":
            args["ProvisionedThroughput"] = {"ReadCapacityUnits": int(d.get("readCapacity", 1)),
                                             "WriteCapacityUnits": int(d.get("writeCapacity", 1))}
        sse = d.get("serverSideEncryption") or {}
        if sse.get("enabled"):
            args["SSESpecification"] = {"Enabled": True, "SSEType": "KMS", **(
                {"KMSMasterKeyId": sse["kmsKeyArn"]} if sse.get("kmsKeyArn") else {})}
        ctx.client("dynamodb").create_table(**args)
        return d.physical_name()

    def configure(self, ctx: Context, rid: str, d: Desired, olds: dict[str, Any] | None) -> dict[str, Any]:
        ddb = ctx.client("dynamodb")
        pitr = bool((d.get("pointInTimeRecovery") or {}).get("enabled", False))
        ddb.update_continuous_backups(TableName=rid, PointInTimeRecoverySpecification={
            "PointInTimeRecoveryEnabled": pitr})
        ttl = d.get("ttl") or {}
        if ttl.get("enabled"):  # entries expire by DynamoDB TTL (the revocation table)
            current = ddb.describe_time_to_live(TableName=rid)["TimeToLiveDescription"]
            if current.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
                ddb.update_time_to_live(TableName=rid, TimeToLiveSpecification={
                    "Enabled": True, "AttributeName": ttl["attributeName"]})
        table = ddb.describe_table(TableName=rid)["Table"]
        if olds is not None:
            protect = bool(d.get("deletionProtectionEnabled", False))
            if table.get("DeletionProtectionEnabled", False) != protect:
                ddb.update_table(TableName=rid, DeletionProtectionEnabled=protect)
            if d.tags():
                ddb.tag_resource(ResourceArn=table["TableArn"], Tags=d.tag_list())
        return {"arn": table["TableArn"], "name": rid, "tagsAll": d.tags()}

    def remove(self, ctx: Context, rid: str, d: Desired) -> None:
        ignore_missing(lambda: ctx.client("dynamodb").delete_table(TableName=rid), "ResourceNotFoundException")


HANDLERS = (TableHandler(),)
